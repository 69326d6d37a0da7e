"""Errors that one layer raises and a layer below it handles: they live here, in the lowest layer, so that no
layer imports upwards to catch them (the training loss checks in ``modules/`` raise these; the run-checkpoint
callback in ``callbacks/`` catches them when an interrupted run is saved)."""

from __future__ import annotations


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run stops, and says which term and what to try."""


class DivergedLossError(NonFiniteLossError):
    """The training loss stayed finite but rose far above where it started (e.g. Adam at a learning rate of 1e6:
    the loss climbs to ~1e7 and accuracy to chance without ever becoming NaN): the run stops, and says so."""
