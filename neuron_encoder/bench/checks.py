"""The benchmark's parameter checks, one of each: the loop, the sweep, the capacity search and
run_bench all validate through these, so the same bad value gets the same ConfigError everywhere."""

from __future__ import annotations

import math
from typing import Any

from neuron_encoder.errors import ConfigError, positive_int  # noqa: F401 (the benchmark calls it from here)

MODES = ("closed", "open")
ARRIVALS = ("poisson", "fixed")
SLO_SEARCHES = ("concurrency", "rate")


def warmup_calls(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"warm-up must be a number of calls >= 0, got {value!r}")
    return value


def positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def bounds(duration_s: float | None, calls: int | None) -> None:
    """A run ends after duration_s seconds or `calls` calls, whichever comes first: one is needed."""
    if duration_s is None and calls is None:
        raise ConfigError("a benchmark needs a bound: a duration in seconds, a number of calls, or both")
    if duration_s is not None:
        positive_number("duration (seconds)", duration_s)
    if calls is not None:
        positive_int("calls", calls)


def slo_ms(value: Any) -> float | None:
    return None if value is None else positive_number("the p99 SLO (ms)", value)


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value
