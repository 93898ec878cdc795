"""The bucket chooser: exact against brute force on small histograms, the default grid, bad input."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from neuron_encoder.buckets import choose_buckets, default_grid, length_histogram, padded_tokens, read_lengths_file
from neuron_encoder.errors import ConfigError, InputFileError


def brute_force(histogram, k, max_len, multiple):
    """Every set of at most k candidate lengths that holds the longest text: the least padding."""
    clipped = {}
    for length, count in histogram.items():
        clipped[min(length, max_len)] = clipped.get(min(length, max_len), 0) + count
    candidates = sorted({min(math.ceil(n / multiple) * multiple, max_len) for n in clipped})
    top = candidates[-1]
    best = None
    for size in range(1, k + 1):
        for combo in itertools.combinations(candidates[:-1], size - 1):
            cost = padded_tokens(clipped, (*combo, top))
            if best is None or cost < best:
                best = cost
    return best


@pytest.mark.parametrize("seed", range(30))
def test_the_choice_is_optimal_on_small_histograms(seed):
    rng = random.Random(seed)
    histogram = {rng.randint(1, 70): rng.randint(1, 20) for _ in range(rng.randint(1, 9))}
    k, multiple, max_len = rng.randint(1, 4), rng.choice([1, 4, 8]), rng.choice([40, 64, 128])
    choice = choose_buckets(histogram, max_buckets=k, max_len=max_len, multiple=multiple)
    clipped = {}
    for length, count in histogram.items():
        clipped[min(length, max_len)] = clipped.get(min(length, max_len), 0) + count
    assert padded_tokens(clipped, choice.seq_lens) == brute_force(histogram, k, max_len, multiple)
    assert len(choice.seq_lens) <= k and max(choice.seq_lens) <= max_len
    assert all(s % multiple == 0 or s == max_len for s in choice.seq_lens)
    assert max(choice.seq_lens) >= min(max(histogram), max_len)  # the longest text fits (or is cut to the max)
    real = sum(min(n, max_len) * c for n, c in histogram.items())
    assert choice.padding_efficiency == pytest.approx(real / padded_tokens(clipped, choice.seq_lens))


def test_a_worked_example():
    # 90 short texts of 10 tokens and 10 long ones of 100: two buckets, 16 and 104, beat one of 104.
    choice = choose_buckets({10: 90, 100: 10}, max_buckets=2, max_len=512)
    assert choice.seq_lens == (16, 104)
    assert choice.padding_efficiency == pytest.approx((900 + 1000) / (90 * 16 + 10 * 104))
    one = choose_buckets({10: 90, 100: 10}, max_buckets=1, max_len=512)
    assert one.seq_lens == (104,) and one.padding_efficiency < choice.padding_efficiency


def test_never_more_buckets_than_help_and_never_above_the_maximum():
    assert choose_buckets({8: 5}, max_buckets=4).seq_lens == (8,)
    long = choose_buckets({20: 3, 900: 2}, max_buckets=2, max_len=512)
    assert long.seq_lens == (24, 512) and long.truncated == 2 and long.texts == 5


@pytest.mark.parametrize("histogram, k, message", [
    ({}, 2, "positive token lengths"),
    ({0: 3}, 2, "positive token lengths"),
    ({5: 1}, 0, "max-buckets must be at least 1"),
])
def test_bad_input(histogram, k, message):
    with pytest.raises(ConfigError, match=message):
        choose_buckets(histogram, max_buckets=k)


def test_the_default_grid_stops_at_the_model_maximum():
    assert default_grid(512) == [32, 64, 128, 256, 512]
    assert default_grid(128) == [32, 64, 128]
    assert default_grid(100) == [32, 64, 100]


def test_lengths_come_from_the_models_tokenizer(tmp_path, minilm_resolved):
    tokenizer = minilm_resolved.tokenizer
    texts = ["A man is playing a guitar.", "hi", "", "  "]
    histogram = length_histogram(texts, tokenizer)
    assert sum(histogram.values()) == 2  # blank lines are not texts
    assert histogram[len(tokenizer.encode(["hi"]).input_ids[0])] == 1  # [CLS] hi [SEP]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts))
    assert read_lengths_file(path, tokenizer) == histogram
    with pytest.raises(InputFileError, match="no such lengths file"):
        read_lengths_file(tmp_path / "missing.txt", tokenizer)
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="no non-empty line"):
        read_lengths_file(tmp_path / "blank.txt", tokenizer)
