"""Benchmark inputs: real tokenised text for checkpoints, a seeded length distribution for random presets."""

from __future__ import annotations

import statistics

import pytest
import torch

from neuron_encoder.bench.workload import (CORPUS, Workload, corpus_workload, draw_lengths, make_workload,
                                           synthetic_workload)
from neuron_encoder.errors import ConfigError, ShapeError
from neuron_encoder.text import Batch


@pytest.fixture(scope="module")
def tokenizer(minilm_resolved):
    return minilm_resolved.tokenizer


def test_corpus_is_varied_english_from_queries_to_paragraphs(tokenizer):
    assert len(CORPUS) >= 50 and len(set(CORPUS)) == len(CORPUS)
    lengths = tokenizer.encode(list(CORPUS)).lengths
    assert min(lengths) <= 8 and max(lengths) > 128


def test_corpus_workload_is_real_text_padded_to_the_bucket(tokenizer):
    workload = corpus_workload(tokenizer, batch_size=4, seq_len=32, pool=3)
    assert len(workload.batches) == 3
    for batch in workload.batches:
        assert batch.input_ids.shape == (4, 32)
        assert (batch.input_ids[:, 0] == 101).all()  # [CLS]: tokenised by the checkpoint's own tokenizer
        assert ((batch.input_ids == tokenizer.pad_id) == (batch.attention_mask == 0)).all()
    assert 0 < workload.padding_efficiency < 1


def test_corpus_workload_is_seeded(tokenizer):
    one, same, other = (corpus_workload(tokenizer, 2, 16, pool=2, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(one.batches, same.batches))
    assert not all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(one.batches, other.batches))


def test_long_buckets_carry_padding_short_ones_truncate(tokenizer):
    assert corpus_workload(tokenizer, 8, 16).padding_efficiency > corpus_workload(tokenizer, 8, 128).padding_efficiency


def test_synthetic_workload_is_never_only_zeros(tiny_config):
    workload = synthetic_workload(tiny_config, batch_size=8, seq_len=64, pool=4)
    for batch in workload.batches:
        real = batch.attention_mask.bool()
        assert (batch.input_ids[real] != tiny_config.pad_token_id).all()
        assert (batch.input_ids[~real] == tiny_config.pad_token_id).all()
        assert (batch.attention_mask.sum(1) >= 2).all()
        assert batch.input_ids.unique().numel() > 10
    assert 0 < workload.padding_efficiency < 1
    assert workload.source.startswith("synthetic")


def test_synthetic_lengths_are_log_normal_around_the_median():
    lengths = draw_lengths(4000, 200, torch.Generator().manual_seed(0), median_fraction=0.4)
    assert lengths.min() >= 2 and lengths.max() <= 200
    assert 70 <= statistics.median(lengths.tolist()) <= 90  # 0.4 x 200 = 80
    assert statistics.mean(lengths.tolist()) > statistics.median(lengths.tolist())  # a long right tail


def test_synthetic_workload_is_seeded(tiny_config):
    a, b = synthetic_workload(tiny_config, 2, 16, seed=3), synthetic_workload(tiny_config, 2, 16, seed=3)
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a.batches, b.batches))


def test_padding_efficiency_is_real_over_padded_tokens():
    ids = torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]])
    mask = (ids != 0).long()
    workload = Workload(2, 4, (Batch(ids, mask, torch.zeros_like(ids)),), source="hand-made")
    assert workload.real_tokens == (4,)
    assert workload.padding_efficiency == pytest.approx(4 / 8)


def test_make_workload_uses_text_when_there_is_a_tokenizer(tiny_config, tokenizer, minilm):
    assert make_workload(minilm.config, tokenizer, 1, 16).source.startswith("corpus")
    assert make_workload(tiny_config, None, 1, 16).source.startswith("synthetic")


@pytest.mark.parametrize("batch_size, seq_len", [(0, 16), (2, 0), (-1, 16), (2, 1.5)])
def test_bad_shapes_are_config_errors(tiny_config, batch_size, seq_len):
    with pytest.raises(ConfigError, match="positive integer"):
        synthetic_workload(tiny_config, batch_size, seq_len)


def test_longer_than_the_model_is_a_config_error(tiny_config):
    with pytest.raises(ShapeError, match="longer than the model's 128 positions"):
        synthetic_workload(tiny_config, 1, 256)


def test_a_batch_of_the_wrong_shape_is_refused():
    ids = torch.ones(2, 8, dtype=torch.long)
    with pytest.raises(ConfigError, match="expected \\(2, 16\\)"):
        Workload(2, 16, (Batch(ids, ids, ids),), source="x")
