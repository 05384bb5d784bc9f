"""Independent NumPy (float64) references for the contrastive objective and optimiser.

Written from the papers, not from the TensorFlow code under test:
- NT-Xent: Chen et al. 2020 (SimCLR), Algorithm 1: the 2N augmented examples are
  interleaved (view 1 of image k at 2k, view 2 at 2k+1), s_ij is the cosine
  similarity, ℓ(i,j) = −log exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ), L = mean over anchors.
- LARS: You et al. 2017 with SimCLR's conventions (L2 decay in the gradient,
  classic momentum, exclusion by variable path).
- Warm-up + cosine decay learning rate.
"""

from __future__ import annotations

import math
import re

import numpy as np


def nt_xent_per_anchor(z1, z2, temperature):
    """Per-anchor NT-Xent losses and hits, in the order (view 1 rows, view 2 rows).

    Returns (losses, hits), each of length 2N: entry k < N is anchor z1[k], entry
    N + k is anchor z2[k]; hits[k] is True when the most similar other example of
    the anchor is its positive.
    """
    z1 = np.asarray(z1, np.float64)
    z2 = np.asarray(z2, np.float64)
    n = z1.shape[0]
    # Interleave: example 2k is view 1 of image k, 2k+1 is view 2 of image k.
    z = np.empty((2 * n, z1.shape[1]))
    z[0::2] = z1
    z[1::2] = z2
    norms = np.sqrt((z ** 2).sum(axis=1, keepdims=True))
    u = z / np.maximum(norms, 1e-300)
    sim = u @ u.T
    losses = np.empty(2 * n)
    hits = np.empty(2 * n, bool)
    for i in range(2 * n):
        j = i + 1 if i % 2 == 0 else i - 1  # the positive partner
        others = [k for k in range(2 * n) if k != i]
        a = sim[i, others] / temperature
        amax = a.max()
        log_denominator = amax + math.log(np.exp(a - amax).sum())
        losses[i] = -(sim[i, j] / temperature - log_denominator)
        hits[i] = others[int(np.argmax(sim[i, others]))] == j
    # Reorder from interleaved to (all view-1 anchors, all view-2 anchors).
    order = np.concatenate([np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)])
    return losses[order], hits[order]


def nt_xent(z1, z2, temperature):
    """NT-Xent (mean over the 2N anchors) and contrast accuracy."""
    losses, hits = nt_xent_per_anchor(z1, z2, temperature)
    return float(losses.mean()), float(hits.mean())


def warmup_cosine(step, base_lr, total_steps, warmup_steps):
    """Learning rate at iteration ``step`` (0-based): linear warm-up then cosine to 0."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if total_steps == warmup_steps:
        return 0.0
    progress = min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def lars_run(weights, grads_per_step, lr_at_step, *, momentum, weight_decay, eeta,
             exclude_from_weight_decay, exclude_from_layer_adaptation=None, nesterov=False):
    """Apply LARS for len(grads_per_step) steps.

    Args:
        weights: dict path -> initial array.
        grads_per_step: list of dicts path -> gradient.
        lr_at_step: callable step -> learning rate.
    Returns:
        (weights, velocities) after the last step, dicts path -> float64 array.
    """
    if exclude_from_layer_adaptation is None:
        exclude_from_layer_adaptation = exclude_from_weight_decay
    w = {k: np.array(v, np.float64) for k, v in weights.items()}
    vel = {k: np.zeros_like(v) for k, v in w.items()}
    for step, grads in enumerate(grads_per_step):
        lr = lr_at_step(step)
        for path in w:
            g = np.array(grads[path], np.float64)
            decay = weight_decay > 0 and not any(re.search(p, path) for p in exclude_from_weight_decay)
            adapt = not any(re.search(p, path) for p in exclude_from_layer_adaptation)
            if decay:
                g = g + weight_decay * w[path]
            trust = 1.0
            if adapt:
                wn = np.linalg.norm(w[path].ravel())
                gn = np.linalg.norm(g.ravel())
                if wn > 0 and gn > 0:
                    trust = eeta * wn / gn
            vel[path] = momentum * vel[path] + lr * trust * g
            if nesterov:
                w[path] = w[path] - (momentum * vel[path] + lr * trust * g)
            else:
                w[path] = w[path] - vel[path]
    return w, vel
