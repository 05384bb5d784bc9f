"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888)
as a Keras 3 optimizer, with the semantics of google-research/simclr's LARSOptimizer
("classic" momentum, the SimCLR default).

For every trainable variable w with gradient g, learning rate η (a float or a
``LearningRateSchedule`` of the iteration count), momentum m and trust coefficient
``eeta``:

    g ← g + weight_decay · w                       unless w is excluded from weight decay
    t ← eeta · ‖w‖ / ‖g‖  (1 if ‖w‖ = 0 or ‖g‖ = 0)  unless w is excluded from adaptation (t = 1)
    v ← m · v + η · t · g
    w ← w − v                                      (nesterov: w ← w − (m · v + η · t · g))

Weight decay is the L2 term folded into the gradient *before* the trust ratio, as in
SimCLR; Keras's own decoupled (AdamW-style) decay is therefore switched off here.

Exclusion is by regular expression (``re.search``) on ``variable.path``: Keras 3
variable *names* carry no scope (a batch-norm scale is just ``gamma``), the path does
(``resnet/conv1/batch_normalization/gamma``). The default patterns
``("batch_normalization", "bias")`` match Keras's default layer names; if the model
names its batch-norm layers otherwise (e.g. ``.../bn/gamma``) pass patterns that match
them. The variables excluded are logged at INFO level when the optimizer is built.
``exclude_from_layer_adaptation=None`` means "same as exclude_from_weight_decay".
"""

from __future__ import annotations

import logging
import re

import keras
from keras import ops

logger = logging.getLogger(__name__)

EETA_DEFAULT = 0.001


def _variable_path(variable) -> str:
    """Scoped path of a Keras variable (``variable.path``), else the plain name."""
    return getattr(variable, "path", None) or variable.name


@keras.saving.register_keras_serializable(package="simclr")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise adaptive rate scaling with momentum (see the module docstring).

    Args:
        learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``.
        momentum: momentum m in [0, 1].
        weight_decay: L2 coefficient added to the gradient (SimCLR: 1e-6 for
            pre-training), 0 for none.
        eeta: trust coefficient (LARS η, SimCLR 1e-3).
        exclude_from_weight_decay: regexes searched in ``variable.path``; matching
            variables get no weight decay.
        exclude_from_layer_adaptation: regexes for variables that get no trust ratio
            (t = 1); ``None``: the same as ``exclude_from_weight_decay``.
        nesterov: Nesterov momentum.
        name: optimizer name.
        **kwargs: other ``keras.optimizers.Optimizer`` arguments (clipnorm,
            loss_scale_factor, gradient_accumulation_steps, …). ``weight_decay``
            above is *not* Keras's decoupled decay.
    """

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=0.0,
        eeta=EETA_DEFAULT,
        exclude_from_weight_decay=("batch_normalization", "bias"),
        exclude_from_layer_adaptation=None,
        nesterov=False,
        name="LARS",
        **kwargs,
    ):
        # Keras's decoupled weight decay stays off (weight_decay=None in the base);
        # ours is folded into the gradient in update_step.
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"LARS: momentum must be in [0, 1], got {momentum}")
        if weight_decay is None:
            weight_decay = 0.0
        if float(weight_decay) < 0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if float(eeta) <= 0:
            raise ValueError(f"LARS: eeta (trust coefficient) must be > 0, got {eeta}")
        self.momentum = momentum
        self.weight_decay = float(weight_decay)
        self.eeta = float(eeta)
        self.nesterov = bool(nesterov)
        self._wd_patterns = tuple(exclude_from_weight_decay or ())
        self._adapt_patterns = (
            self._wd_patterns if exclude_from_layer_adaptation is None
            else tuple(exclude_from_layer_adaptation)
        )
        for pattern in self._wd_patterns + self._adapt_patterns:
            re.compile(pattern)  # fail early on a bad regex
        self._decay_flags = []
        self._adapt_flags = []

    # ------------------------------------------------------------------ exclusion
    def _use_weight_decay(self, variable):
        """Whether ``variable`` gets L2 weight decay (weight_decay > 0, path not excluded)."""
        if not self.weight_decay:
            return False
        # Honour Optimizer.exclude_from_weight_decay(var_list=..., var_names=...) too.
        if not super()._use_weight_decay(variable):
            return False
        path = _variable_path(variable)
        return not any(re.search(p, path) for p in self._wd_patterns)

    def _do_layer_adaptation(self, variable):
        """Whether ``variable`` gets the trust ratio (path not excluded from adaptation)."""
        path = _variable_path(variable)
        return not any(re.search(p, path) for p in self._adapt_patterns)

    def _apply_weight_decay(self, variables):
        """No decoupled decay: LARS adds weight_decay·w to the gradient in update_step."""
        return

    # ------------------------------------------------------------------ state
    def build(self, variables):
        """Create one momentum slot per variable; fix the exclusion flags by path.

        The flags are computed here, on the Keras variables, because update_step
        receives the backend variables (without ``.path``) under TensorFlow.
        """
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self._decay_flags = [self._use_weight_decay(v) for v in variables]
        self._adapt_flags = [self._do_layer_adaptation(v) for v in variables]
        for v, decay, adapt in zip(variables, self._decay_flags, self._adapt_flags):
            logger.debug("LARS %s: weight decay %s, layer adaptation %s",
                         _variable_path(v), decay, adapt)
        logger.debug(
            "LARS built on %d variables; excluded from weight decay: %s; "
            "excluded from layer adaptation: %s",
            len(variables),
            [_variable_path(v) for v, d in zip(variables, self._decay_flags) if not d]
            if self.weight_decay else "all (weight_decay=0)",
            [_variable_path(v) for v, a in zip(variables, self._adapt_flags) if not a],
        )

    def update_step(self, gradient, variable, learning_rate):
        """One LARS update of ``variable`` (see the module docstring for the formulas)."""
        index = self._get_variable_index(variable)
        velocity = self.momentums[index]
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        grad = ops.cast(gradient, dtype)
        momentum = ops.cast(self.momentum, dtype)

        if self._decay_flags[index]:
            grad = grad + ops.cast(self.weight_decay, dtype) * variable
        if self._adapt_flags[index]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(grad)))
            positive = ops.logical_and(ops.greater(w_norm, 0), ops.greater(g_norm, 0))
            safe_g_norm = ops.where(ops.greater(g_norm, 0), g_norm, ops.ones_like(g_norm))
            trust = ops.where(positive, ops.cast(self.eeta, dtype) * w_norm / safe_g_norm,
                              ops.ones_like(w_norm))
            scaled_lr = lr * trust
        else:
            scaled_lr = lr

        next_velocity = momentum * velocity + scaled_lr * grad
        self.assign(velocity, next_velocity)
        if self.nesterov:
            update = momentum * next_velocity + scaled_lr * grad
        else:
            update = next_velocity
        self.assign_sub(variable, update)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "eeta": self.eeta,
            "exclude_from_weight_decay": list(self._wd_patterns),
            "exclude_from_layer_adaptation": list(self._adapt_patterns),
            "nesterov": self.nesterov,
        })
        return config
