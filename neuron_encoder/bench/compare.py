"""Side-by-side latency comparison for the benchmark scripts: candidates interleaved in one run.

Interleaving (A, B, C, A, B, C, ...) spreads machine noise evenly over the candidates, so the ratios
printed are fair even where the absolute numbers wander.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def compare(candidates: Mapping[str, Callable[[], object]], rounds: int = 20, warmup: int = 3,
            min_seconds: float = 0.0) -> dict[str, float]:
    """Median milliseconds per call of each candidate, measured interleaved round by round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    done = 0
    while done < rounds or time.perf_counter() - start < min_seconds:
        for name, fn in candidates.items():
            t0 = time.perf_counter_ns()
            fn()
            samples[name].append((time.perf_counter_ns() - t0) / 1e6)
        done += 1
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio_table(title: str, rows: list[tuple[str, dict[str, float]]], baseline: str) -> str:
    """A text table: one line per (setting, candidate) with its median and ratio to `baseline`."""
    lines = [title, f"{'setting':<22} {'candidate':<34} {'median ms':>10} {'ratio':>7}"]
    for setting, medians in rows:
        for name, ms in medians.items():
            lines.append(f"{setting:<22} {name:<34} {ms:>10.2f} {ms / medians[baseline]:>7.3f}")
    return "\n".join(lines)
