from __future__ import annotations

import dataclasses

import pytest

from neuron_encoder.config import PRESETS, EncoderConfig, preset
from neuron_encoder.errors import ConfigError, ShapeError


def test_bert_base_defaults_are_berts():
    c = preset("bert-base")
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 12, 12, 3072)
    assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size) == (30522, 512, 2)
    assert c.layer_norm_eps == 1e-12 and c.hidden_act == "gelu" and not c.norm_first
    assert c.head_size == 64


@pytest.mark.parametrize("name, shape", [
    ("bert-large", (1024, 24, 16, 4096)),
    ("minilm-l6", (384, 6, 12, 1536)),
    ("keras-bert", (768, 12, 12, 3072)),
])
def test_presets(name, shape):
    c = PRESETS[name]
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == shape


def test_keras_bert_matches_the_keras_bert_example():
    c = preset("keras-bert")
    assert c.vocab_size == 30000 and c.max_position_embeddings == 512


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("bert-base").hidden_size = 10


@pytest.mark.parametrize("changes, words", [
    ({"hidden_size": 100, "num_attention_heads": 12}, ["hidden_size=100", "num_attention_heads=12"]),
    ({"num_hidden_layers": 0}, ["num_hidden_layers", "0"]),
    ({"vocab_size": -1}, ["vocab_size"]),
    ({"hidden_act": "swish"}, ["swish"]),
    ({"layer_norm_eps": 0.0}, ["layer_norm_eps"]),
    ({"pooling": "weighted"}, ["weighted"]),
    ({"pad_token_id": 99999}, ["pad_token_id=99999"]),
    ({"type_vocab_size": -1}, ["type_vocab_size", "-1"]),
    ({"embedding_size": 0}, ["embedding_size", "0"]),
    ({"position_offset": 512}, ["position_offset=512", "max_position_embeddings=512"]),
    ({"relative_attention_buckets": 30}, ["relative_attention_buckets=30"]),
    ({"family": "gpt2"}, ["gpt2", "distilbert"]),
    ({"share_layers": "yes"}, ["share_layers='yes'"]),
])
def test_invalid_configs_name_the_values(changes, words):
    with pytest.raises(ValueError) as info:
        EncoderConfig(**changes)
    for word in words:
        assert word in str(info.value)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="bert-base"):
        preset("gpt-5")


def test_from_hf_config_maps_and_refuses():
    c = EncoderConfig.from_hf_config({"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                                      "intermediate_size": 1536, "hidden_act": "gelu_new"})
    assert c.hidden_size == 384 and c.hidden_act == "gelu_tanh"
    with pytest.raises(ConfigError, match="relative_key"):
        EncoderConfig.from_hf_config({"position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match="silu"):
        EncoderConfig.from_hf_config({"hidden_act": "silu"})


def test_round_trip_dict():
    c = preset("minilm-l6")
    assert EncoderConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="colour"):
        EncoderConfig.from_dict({"colour": 1})


def test_the_usable_length_leaves_out_robertas_offset():
    c = preset("roberta-base")
    assert (c.max_position_embeddings, c.position_offset, c.max_length) == (514, 2, 512)
    c.check_sequence_length(512)
    with pytest.raises(ShapeError, match="longer than the model's 512 positions"):
        c.check_sequence_length(513)


def test_from_hf_config_reads_each_familys_names():
    distil = EncoderConfig.from_hf_config({"model_type": "distilbert", "dim": 384, "hidden_dim": 1536, "n_layers": 3,
                                           "n_heads": 6, "activation": "relu", "max_position_embeddings": 512})
    assert (distil.hidden_size, distil.intermediate_size, distil.num_hidden_layers, distil.num_attention_heads,
            distil.hidden_act, distil.type_vocab_size, distil.layer_norm_eps) == (384, 1536, 3, 6, "relu", 0, 1e-12)
    roberta = EncoderConfig.from_hf_config({"model_type": "xlm-roberta", "pad_token_id": 1, "type_vocab_size": 1})
    assert roberta.position_offset == 2 and roberta.family == "xlm-roberta"
    assert EncoderConfig.from_hf_config({"model_type": "electra", "embedding_size": 768}).embedding_size is None
    assert EncoderConfig.from_hf_config({"model_type": "electra", "embedding_size": 128}).embedding_size == 128
    mpnet = EncoderConfig.from_hf_config({"model_type": "mpnet", "relative_attention_num_buckets": 32})
    assert (mpnet.type_vocab_size, mpnet.position_offset, mpnet.relative_attention_buckets) == (0, 2, 32)
    with pytest.raises(ConfigError, match="always computes 32 buckets"):
        EncoderConfig.from_hf_config({"model_type": "mpnet", "relative_attention_num_buckets": 64})
    albert = EncoderConfig.from_hf_config({"model_type": "albert", "embedding_size": 128, "hidden_act": "gelu_new"})
    assert albert.share_layers and albert.embedding_size == 128 and albert.hidden_act == "gelu_tanh"
    with pytest.raises(ConfigError, match="supported families: bert, distilbert"):
        EncoderConfig.from_hf_config({"model_type": "t5"})
