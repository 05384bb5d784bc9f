"""Errors of the train stage, shared by the modules that build and run a training loop.

The stage (:mod:`scripts.train`) maps them to exit statuses: bad inputs → 2, a
non-finite loss → 4.
"""
from __future__ import annotations


class TrainInputError(ValueError):
    """Inputs or parameters that cannot be trained on (the message says which key/file)."""


class NonFiniteLossError(RuntimeError):
    """The training (or validation) loss became NaN or infinite; the run stopped."""

    def __init__(self, message: str, step: int, last_checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint
