from __future__ import annotations

import dataclasses

import pytest

from neuron_encoder.config import PRESETS, EncoderConfig, preset
from neuron_encoder.errors import ConfigError


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
