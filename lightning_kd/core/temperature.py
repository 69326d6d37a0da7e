"""What a temperature does at its extremes, said once where it is set (a module's ``temperature``, a
schedule's ends). Pure Python."""

from __future__ import annotations

import warnings

#: temperatures the distillation literature uses (Hinton's 1–20, LLM KD's 0.5–2): outside it, a warning
TEMPERATURE_RANGE = (0.25, 20.0)


def warn_unusual_temperature(value: float, where: str = "temperature") -> None:
    """Say what a legal but extreme temperature does: a large one makes both softened distributions uniform to
    fp32 precision (the KD term carries no information, and the T² factor magnifies rounding); a small one makes
    them one-hot (the KD term is a hard-label loss, and ``T²`` scales it towards 0)."""
    low, high = TEMPERATURE_RANGE
    if value > high:
        warnings.warn(
            f"{where}={value:g} is above {high:g}: the softened teacher and student distributions are close to "
            f"uniform, so the KD term carries almost no information and T² = {value**2:g} magnifies fp32 rounding. "
            "Typical values are 1 to 8 for classifiers, 1 for language models.",
            UserWarning,
            stacklevel=3,
        )
    elif value < low:
        warnings.warn(
            f"{where}={value:g} is below {low:g}: the softened distributions are close to one-hot and T² = "
            f"{value**2:.3g} shrinks the KD term, so the run is close to plain cross-entropy. Typical values are 1 "
            "to 8 for classifiers, 1 for language models.",
            UserWarning,
            stacklevel=3,
        )
