from __future__ import annotations

import pytest

from neuron_encoder.errors import CheckpointError, ShapeError
from neuron_encoder.text import Tokenizer, load_tokenizer
from neuron_encoder.weights import resolve


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(resolve("minilm"))


def test_pads_to_the_longest_and_to_a_bucket(tokenizer):
    batch = tokenizer.encode(["hello world", "a somewhat longer sentence here"])
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.token_type_ids.shape
    assert batch.lengths == [4, 7]  # [CLS] hello world [SEP]; the longer one sets the width
    assert batch.input_ids.shape[1] == 7
    padded = tokenizer.encode(["hello world"], pad_to=16)
    assert padded.input_ids.shape == (1, 16) and padded.lengths == [4]
    assert padded.input_ids[0, 4:].eq(tokenizer.pad_id).all()


def test_pairs_get_segment_ids(tokenizer):
    batch = tokenizer.encode([("first part", "second part")])
    assert batch.token_type_ids[0].tolist().count(1) == 3  # second part [SEP]


def test_truncates_or_refuses_long_texts(tokenizer):
    long = "word " * 300
    batch = tokenizer.encode([long], pad_to=32)
    assert batch.input_ids.shape == (1, 32) and batch.lengths == [32]
    assert batch.input_ids[0, -1].item() == tokenizer._tok.token_to_id("[SEP]")
    with pytest.raises(ShapeError, match="302 tokens, more than the limit 32"):
        tokenizer.encode([long], pad_to=32, truncate=False)


def test_bad_inputs(tokenizer):
    with pytest.raises(ShapeError, match="no texts"):
        tokenizer.encode([])
    with pytest.raises(ShapeError, match="list of texts"):
        tokenizer.encode("just a string")


def test_missing_tokenizer_files(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="no tokenizer.json, vocab.txt or sentencepiece.bpe.model"):
        Tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="carries no tokenizer: pass one"):
        load_tokenizer(tiny_model)


def test_random_batch_never_uses_the_pad_id_for_real_tokens():
    import torch
    from neuron_encoder.config import EncoderConfig
    from neuron_encoder.text import random_batch
    config = EncoderConfig(vocab_size=3000, pad_token_id=1500)  # a pad id inside the random range
    batch = random_batch(config, torch.tensor([5, 16, 1]), 16, torch.Generator().manual_seed(0))
    assert batch.lengths == [5, 16, 1] and batch.input_ids.shape == (3, 16)
    real = batch.attention_mask.bool()
    assert (batch.input_ids[real] >= 1000).all() and (batch.input_ids[real] != 1500).all()
    assert (batch.input_ids[~real] == 1500).all()
