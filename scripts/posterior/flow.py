"""The conditional normalising flow p(targets | condition): a conditional masked
autoregressive flow (MAF, Papamakarios et al. 2017) built from TensorFlow Probability.

Architecture, and how it maps onto the original pipeline's cINN (``model:`` section):

- ``NUM_COUPLING_LAYERS`` → the number of flow layers. Each layer is a
  ``tfb.MaskedAutoregressiveFlow`` whose shift and log-scale come from a
  ``tfb.AutoregressiveNetwork`` (MADE) with ``conditional=True``, followed by a reversal
  of the target order (the role of the cINN's fixed permutations between coupling
  blocks), so every target is, in some layer, transformed given all the others.
- ``CLAMP`` → a soft clamp of each layer's log-scale, ``CLAMP · tanh(s / CLAMP)`` (the
  cINN's GLOW blocks use ``CLAMP · 0.636 · atan(s / CLAMP)``: the same bound, the same
  purpose — no exploding scales early in training).
- conditioning network → ``CONDITION_EMBEDDING``: an MLP (ReLU hidden layers, linear last
  layer) maps the condition (representation components + observables) to an embedding
  that every MADE receives as its conditional input, trained jointly with the flow.
- ``HIDDEN_UNITS`` → the hidden widths of every MADE (the cINN's subnet widths).

Everything is a ``tf.Module`` (tf_keras layers inside, as TFP requires), trained by a
plain ``tf.function`` step and saved with ``tf.train.Checkpoint``; no Keras 3 object is
mixed in. Densities are evaluated in the parallel (inverse) direction, one network pass
per layer; sampling runs the autoregressive (forward) direction, D passes per layer for
D targets (cheap for a handful of targets).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

tfb = tfp.bijectors

_LOG_2PI = math.log(2.0 * math.pi)


def _clamped(made, clamp: float):
    def shift_and_log_scale(x, conditional_input=None):
        out = made(x, conditional_input=conditional_input)
        shift, log_scale = tf.unstack(out, num=2, axis=-1)
        return shift, clamp * tf.tanh(log_scale / clamp)
    return shift_and_log_scale


class ConditionalFlow(tf.Module):
    """Conditional MAF for ``target_dim`` targets given ``condition_dim`` conditions.

    Weights are built at construction, seeded by ``seed`` (the same seed gives the same
    initial flow). :meth:`log_prob` is the training objective; :meth:`sample` draws
    posterior samples with stateless seeds.
    """

    def __init__(self, target_dim: int, condition_dim: int, num_layers: int = 4,
                 hidden_units=(64, 64), clamp: float = 1.0, embedding=(64, 16), seed: int = 0,
                 name: str = "conditional_flow"):
        super().__init__(name=name)
        self.target_dim, self.condition_dim = int(target_dim), int(condition_dim)
        tf_keras.utils.set_random_seed(int(seed))
        layers = []
        for i, width in enumerate(embedding):
            last = i == len(embedding) - 1
            layers.append(tf_keras.layers.Dense(width, activation=None if last else "relu"))
        self.embed = tf_keras.Sequential(layers) if layers else None
        embed_dim = embedding[-1] if embedding else condition_dim
        self.mades = [tfb.AutoregressiveNetwork(
            params=2, event_shape=[self.target_dim], conditional=True,
            conditional_event_shape=[embed_dim], hidden_units=list(hidden_units),
            activation="relu", input_order="left-to-right")
            for _ in range(num_layers)]
        self.layers = []
        reverse = list(range(self.target_dim))[::-1]
        for i, made in enumerate(self.mades):
            self.layers.append(tfb.MaskedAutoregressiveFlow(
                shift_and_log_scale_fn=_clamped(made, float(clamp)), name=f"maf{i}"))
            if self.target_dim > 1 and i < num_layers - 1:
                self.layers.append(tfb.Permute(permutation=reverse, name=f"reverse{i}"))
        # build every weight now, in a fixed order, so the seed fixes them
        self.log_prob(tf.zeros([1, self.target_dim]), tf.zeros([1, self.condition_dim]))

    def embedding(self, condition):
        condition = tf.convert_to_tensor(condition, tf.float32)
        return self.embed(condition) if self.embed is not None else condition

    def _kwargs(self, layer, e):
        return {"conditional_input": e} if isinstance(layer, tfb.MaskedAutoregressiveFlow) else {}

    def log_prob(self, targets, condition):
        """log p(targets | condition) per row (nats)."""
        x = tf.convert_to_tensor(targets, tf.float32)
        e = self.embedding(condition)
        log_det = tf.zeros(tf.shape(x)[:1])
        for layer in reversed(self.layers):
            kw = self._kwargs(layer, e)
            log_det += layer.inverse_log_det_jacobian(x, event_ndims=1, **kw)
            x = layer.inverse(x, **kw)
        base = -0.5 * tf.reduce_sum(x * x, axis=-1) - 0.5 * self.target_dim * _LOG_2PI
        return base + log_det

    def sample_given(self, condition, num_samples: int, seed) -> tf.Tensor:
        """``num_samples`` draws per condition row: (N, num_samples, target_dim).
        ``seed``: a stateless seed, shape (2,) int."""
        e = self.embedding(condition)
        n = tf.shape(e)[0]
        e_rep = tf.repeat(e, num_samples, axis=0)
        x = tf.random.stateless_normal(tf.stack([n * num_samples, self.target_dim]), seed=seed)
        for layer in self.layers:
            x = layer.forward(x, **self._kwargs(layer, e_rep))
        return tf.reshape(x, tf.stack([n, num_samples, self.target_dim]))

    def sample(self, condition, num_samples: int, seed: int = 0, chunk: int = 256,
               first_chunk: int = 0) -> np.ndarray:
        """Posterior samples (N, num_samples, target_dim) as NumPy, ``chunk`` rows at a
        time; chunk ``k`` uses the stateless seed ``(seed, first_chunk + k)``, so a row's
        samples depend only on the seed and its position (a caller that samples a long
        table block by block, in blocks of whole chunks, passes the block's first chunk)."""
        condition = np.asarray(condition, np.float32)
        out = np.empty((len(condition), num_samples, self.target_dim), np.float32)
        step = self._sample_fn(num_samples)
        for k, start in enumerate(range(0, len(condition), chunk)):
            part = condition[start:start + chunk]
            out[start:start + len(part)] = step(
                part, tf.constant([seed, first_chunk + k], tf.int64)).numpy()
        return out

    def _sample_fn(self, num_samples: int):
        cache = self.__dict__.setdefault("_sample_cache", {})
        if num_samples not in cache:
            cache[num_samples] = tf.function(
                lambda c, s: self.sample_given(c, num_samples, s),
                input_signature=[tf.TensorSpec([None, self.condition_dim], tf.float32),
                                 tf.TensorSpec([2], tf.int64)])
        return cache[num_samples]
