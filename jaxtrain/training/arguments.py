"""Arguments checked as ``torch.optim`` checks them, and more strictly: one line naming each argument.

torch.optim refuses a negative lr, momentum, weight_decay or eps and a beta outside [0, 1) ("Invalid learning
rate", "Invalid weight_decay value", ...); these refuse the same, and NaN and infinity too, which torch lets
through although every step with them diverges. Each message names one argument:
``lr=-1.0; expected a finite number >= 0``. A traced value (``optax.inject_hyperparams`` builds the optimizer
inside jit) has no number to check yet and passes. The optimizers, the schedules and the callbacks use them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax


def is_number(value: Any) -> bool:
    """A real scalar: a Python or numpy number, or a 0-d array (not a bool or a string, which float() would take)."""
    if isinstance(value, bool | str | bytes) or callable(value):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def check_number(name: str, value: Any, *, positive: bool = False, below_one: bool = False) -> None:
    """Raises ``ValueError("name=value; expected ...")`` unless ``value`` is a finite number in the range."""
    if isinstance(value, jax.core.Tracer):
        return
    ok = is_number(value) and math.isfinite(float(value))
    if below_one:
        ok = ok and 0 <= float(value) < 1
        expected = "a number in [0, 1)"
    elif positive:
        ok = ok and float(value) > 0
        expected = "a finite number > 0"
    else:
        ok = ok and float(value) >= 0
        expected = "a finite number >= 0"
    if not ok:
        raise ValueError(f"{name}={value!r}; expected {expected}")


def check_integer(name: str, value: Any, low: int, what: str = "") -> None:
    """Raises ``ValueError("name=value; expected an integer >= low")`` unless ``value`` is such an integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name}={value!r}; expected {kind}{what}")
