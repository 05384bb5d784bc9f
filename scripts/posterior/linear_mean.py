"""A linear mean under the flow: the flow models what a ridge regression leaves.

With a few hundred training objects and a dozen conditions, a flow trained from scratch
estimates the conditional *mean* with a large variance: on the demo, five seeds of the
same flow put their posterior medians as far apart as the posterior widths, and the
median of one flow reached R² 0.83 for stellar mass where a ridge regression on the
same conditions reaches 0.89. The linear part is what a small training set pins down
well. ``infer.LINEAR_MEAN: true`` therefore fits a ridge regression of the targets (in
the flow's space) on the conditions, on the training rows, with its penalty chosen by
efficient leave-one-out cross-validation (scikit-learn ``RidgeCV``); the flow is trained
on the standardised residuals and models their shape, skew, width and the dependence of
all three on the condition; every sample gets the ridge prediction added back.

Both steps are deterministic given the training rows, so a resumed run refits the same
ridge and continues the same flow.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV

#: Ridge penalties searched by leave-one-out CV (conditions are whitened: O(1) scale).
ALPHAS = np.logspace(-3, 3, 25)


class LinearMean:
    """``fit(condition, targets)`` on finite training rows; ``residual`` maps targets to the
    flow's standardised residuals, ``restore`` maps flow samples back to targets."""

    def fit(self, condition, targets) -> "LinearMean":
        x, y = np.asarray(condition, np.float64), np.asarray(targets, np.float64)
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
        if ok.sum() < 3:
            raise ValueError("infer.LINEAR_MEAN: fewer than three finite training rows")
        self.ridge_ = RidgeCV(alphas=ALPHAS).fit(x[ok], y[ok])
        resid = y[ok] - self.ridge_.predict(x[ok])
        std = resid.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def predict(self, condition) -> np.ndarray:
        """Ridge mean (N, D) in the flow's target space; NaN rows where a condition is NaN."""
        x = np.asarray(condition, np.float64)
        out = np.full((len(x), len(self.scale_)), np.nan)
        ok = np.isfinite(x).all(axis=1)
        if ok.any():
            out[ok] = self.ridge_.predict(x[ok]).reshape(int(ok.sum()), -1)
        return out

    def residual(self, targets, condition) -> np.ndarray:
        return (np.asarray(targets, np.float64) - self.predict(condition)) / self.scale_

    def restore(self, samples, condition) -> np.ndarray:
        """Flow samples (N, S, D) of the residual → samples (N, S, D) of the targets."""
        return np.asarray(samples, np.float64) * self.scale_ + self.predict(condition)[:, None, :]
