"""Independent NumPy (float64) references for the contrastive objective and optimiser.

Written from the papers, not from the TensorFlow code under test:
- NT-Xent: Chen et al. 2020 (SimCLR), Algorithm 1: the 2N augmented examples are
  interleaved (view 1 of image k at 2k, view 2 at 2k+1), s_ij is the cosine
  similarity, ℓ(i,j) = −log exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ), L = mean over anchors.
- NNCLR: Dwibedi et al. 2021, eq. 2, with the views swapped for the symmetric term: the
  anchor is the support-queue entry most cosine-similar to a view, the candidates are the
  other view of every image; the queue is a FIFO of view-1 embeddings (empty queue: the
  anchor is the view itself; partly filled: only filled slots are searched).
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


def nnclr_step(z1, z2, queue, count, temperature):
    """One NNCLR step: loss, accuracy, neighbour slots and the queue after the update.

    Args:
        z1, z2: projections (N, d) of the two views; queue: (Q, d) support queue;
        count: embeddings enqueued so far (slot of the next write: count mod Q).
    Returns:
        dict with loss (mean over the 2N anchors), accuracy, indices (2N,) the slots of
        NN(view 1 rows) then NN(view 2 rows), -1 when the queue is empty, queue (the new
        queue, float64) and count.
    """
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.maximum(np.sqrt((x ** 2).sum(axis=1, keepdims=True)), 1e-300)

    u = (unit(z1), unit(z2))
    queue = np.array(queue, np.float64)
    size, n = queue.shape[0], u[0].shape[0]
    filled = min(int(count), size)
    losses, hits, indices = [], [], []
    for a, b in ((0, 1), (1, 0)):
        for i in range(n):
            if filled == 0:
                slot, anchor = -1, u[a][i]
            else:
                sims = [float(np.dot(u[a][i], queue[j])) for j in range(filled)]
                slot = int(np.argmax(sims))
                anchor = queue[slot]
            logits = np.array([np.dot(anchor, u[b][k]) for k in range(n)]) / temperature
            top = logits.max()
            losses.append(-(logits[i] - top - math.log(np.exp(logits - top).sum())))
            hits.append(int(np.argmax(logits)) == i)
            indices.append(slot)
    new_queue = queue.copy()
    for k in range(n):
        new_queue[(int(count) + k) % size] = u[0][k]
    return {"loss": float(np.mean(losses)), "accuracy": float(np.mean(hits)),
            "indices": np.array(indices), "queue": new_queue, "count": int(count) + n}


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
