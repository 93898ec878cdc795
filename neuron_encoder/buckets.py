"""Which sequence lengths to compile: a grid that fits the traffic.

A compiled bucket pads every input to its length, so buckets far above the real lengths waste most
of the compute (sentences of ~28 tokens padded to 128 run at 21% padding efficiency). Given the
token lengths of real texts, choose_buckets finds the K lengths that minimise the padded tokens,
exactly (dynamic programming over the candidate lengths); without texts, DEFAULT_GRID.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InputFileError
from .files import read_text_file
from .options import parse_sizes

DEFAULT_GRID = (32, 64, 128, 256, 512)
DEFAULT_MAX_BUCKETS = 4
DEFAULT_MULTIPLE = 8  # bucket lengths are multiples of 8: aligned shapes, and fewer distinct compiles


@dataclass(frozen=True)
class BucketChoice:
    """Chosen sequence buckets and what they cost on the histogram they were chosen for."""

    seq_lens: tuple[int, ...]
    padding_efficiency: float  # real tokens / padded tokens over the histogram, 0..1
    texts: int
    truncated: int  # texts longer than the model's maximum, cut to it
    length_summary: dict[str, float]  # min, p50, p90, p99, max of the token lengths

    def to_dict(self) -> dict:
        return {"seq_lens": list(self.seq_lens), "expected_padding_efficiency": round(self.padding_efficiency, 4),
                "texts": self.texts, "truncated": self.truncated, "lengths": self.length_summary}


def default_grid(max_len: int) -> list[int]:
    """DEFAULT_GRID up to the model's maximum, which is always the last bucket."""
    return sorted({s for s in DEFAULT_GRID if s < max_len} | {max_len})


def padded_tokens(histogram: Mapping[int, int], seq_lens: Iterable[int]) -> int:
    """Tokens after padding each length to the smallest bucket that holds it (longer ones: the largest)."""
    buckets = sorted(seq_lens)
    return sum(count * next((s for s in buckets if s >= length), buckets[-1]) for length, count in histogram.items())


def choose_buckets(histogram: Mapping[int, int], max_buckets: int = DEFAULT_MAX_BUCKETS, max_len: int = 512,
                   multiple: int = DEFAULT_MULTIPLE) -> BucketChoice:
    """The at most `max_buckets` lengths (multiples of `multiple`, none above max_len) that minimise the
    padded tokens of `histogram` {token length: count}; lengths above max_len are truncated to it."""
    if not histogram or any(not isinstance(n, int) or n <= 0 or c < 0 for n, c in histogram.items()):
        raise ConfigError("a length histogram needs positive token lengths with counts")
    if max_buckets < 1:
        raise ConfigError(f"--max-buckets must be at least 1, got {max_buckets}")
    clipped = Counter()
    for length, count in histogram.items():
        clipped[min(length, max_len)] += count
    # Each length can only go to the next candidate at or above it: group the counts by that candidate.
    groups = Counter()
    for length, count in clipped.items():
        groups[min(math.ceil(length / multiple) * multiple, max_len)] += count
    candidates = sorted(groups)
    best = _minimum_padding([groups[c] for c in candidates], candidates, max_buckets)
    real = sum(length * count for length, count in clipped.items())
    return BucketChoice(tuple(best), real / padded_tokens(clipped, best), sum(histogram.values()),
                        sum(c for n, c in histogram.items() if n > max_len), _summary(clipped))


def _minimum_padding(counts: list[int], lengths: list[int], k: int) -> list[int]:
    """cost[j][b]: least padded tokens for the first j+1 candidates with b buckets, the last at lengths[j]."""
    n = len(lengths)
    prefix = [0]
    for count in counts:
        prefix.append(prefix[-1] + count)
    inf = float("inf")
    cost = [[inf] * (k + 1) for _ in range(n)]
    back = [[-1] * (k + 1) for _ in range(n)]
    for j in range(n):
        cost[j][1] = lengths[j] * prefix[j + 1]
        for b in range(2, k + 1):
            for i in range(j):  # the previous bucket ends at lengths[i]
                value = cost[i][b - 1] + lengths[j] * (prefix[j + 1] - prefix[i + 1])
                if value < cost[j][b]:
                    cost[j][b], back[j][b] = value, i
    b = min(range(1, k + 1), key=lambda b: (cost[n - 1][b], b))  # fewest buckets among the cheapest
    chosen, j = [], n - 1
    while j >= 0 and b >= 1:
        chosen.append(lengths[j])
        j, b = back[j][b], b - 1
    return sorted(chosen)


def _summary(histogram: Mapping[int, int]) -> dict[str, float]:
    lengths = sorted(length for length, count in histogram.items() for _ in range(count))

    def at(q: float) -> float:
        return float(lengths[min(len(lengths) - 1, int(q * (len(lengths) - 1) + 0.5))])
    return {"min": float(lengths[0]), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": float(lengths[-1])}


def length_histogram(texts: Iterable[str], tokenizer) -> Counter:
    """Token lengths (with the special tokens) of texts under the model's own tokenizer."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ConfigError("no texts to measure: the lengths file has no non-empty line")
    return Counter(tokenizer.lengths(texts))


def read_lengths_file(path: str | Path, tokenizer) -> Counter:
    """The histogram of a text file, one text per line (--lengths-from)."""
    return length_histogram(read_text_file(Path(path), "lengths file", InputFileError).splitlines(), tokenizer)


def plan_seq_lens(seq_lens, max_len: int, tokenizer=None, lengths_from: str | Path | None = None,
                  max_buckets: int = DEFAULT_MAX_BUCKETS) -> tuple[list[int], BucketChoice | None]:
    """The sequence buckets to compile: the given lengths, or for "auto" the best `max_buckets` for the
    texts of `lengths_from` (tokenised by the model's tokenizer), or the default grid without a file."""
    if str(seq_lens).strip() != "auto":
        if lengths_from is not None:
            raise ConfigError("--lengths-from chooses the buckets, so it needs --seq-lens auto")
        return parse_sizes(seq_lens, "sequence lengths"), None
    if lengths_from is None:
        return default_grid(max_len), None
    if tokenizer is None:
        raise ConfigError("--lengths-from needs the model's tokenizer, and this model has none (random weights)")
    choice = choose_buckets(read_lengths_file(lengths_from, tokenizer), max_buckets, max_len)
    return list(choice.seq_lens), choice
