from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from neuron_encoder import Encoder, preset
from neuron_encoder.cli import app
from neuron_encoder.errors import ConfigError
from neuron_encoder.params import breakdown


def test_bert_base_counts_from_the_brief():
    counts = breakdown(preset("bert-base"))
    assert counts["attention"] == 4 * 768 * 768 + 4 * 768 == 2_362_368
    assert counts["feed_forward"] == 2 * 768 * 3072 + 3072 + 768 == 4_722_432
    assert counts["layer"] == 2_362_368 + 4_722_432 + 2 * 2 * 768
    assert counts["embeddings"] == (30522 + 512 + 2) * 768 + 2 * 768


@pytest.mark.parametrize("name", ["bert-base", "minilm-l6", "tiny"])
def test_total_equals_the_real_model_and_hugging_face(name):
    transformers = pytest.importorskip("transformers")
    config = preset(name)
    counts = breakdown(config)
    with torch.device("meta"):
        ours = Encoder(config)
        hf = transformers.BertModel(transformers.BertConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings), add_pooling_layer=True)
    hf_total = sum(p.numel() for p in hf.parameters())
    assert counts["total"] == sum(p.numel() for p in ours.parameters())
    assert counts["total"] + counts["pooler"] == hf_total
    assert counts["total"] == counts["embeddings"] + counts["all_layers"]


def test_pre_norm_adds_the_final_norm():
    counts = breakdown(preset("bert-base").replace(norm_first=True))
    assert counts["final_norm"] == 2 * 768
    assert counts["total"] == breakdown(preset("bert-base"))["total"] + 2 * 768


def test_cli_json_has_the_integer_keys():
    result = CliRunner().invoke(app, ["params", "--preset", "bert-base", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in ("embeddings", "attention", "feed_forward", "layer", "total"):
        assert isinstance(data[key], int)
    assert data["attention"] == 2362368 and data["feed_forward"] == 4722432


def test_cli_table_shows_the_components():
    result = CliRunner().invoke(app, ["params", "--preset", "bert-base"])
    assert result.exit_code == 0
    assert "2,362,368" in result.output and "4,722,432" in result.output and "W_Q" in result.output


def test_cli_unknown_preset_is_a_config_error_with_the_known_presets():
    result = CliRunner().invoke(app, ["params", "--preset", "nope"])
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 2
    assert str(result.exception) == ("unknown preset 'nope'; known presets: bert-base, bert-large, minilm-l6, "
                                     "keras-bert, distilbert-base, roberta-base, xlm-roberta-base, tiny")
    assert result.output == ""  # nothing half-printed


@pytest.mark.parametrize("name, published", [
    ("distilbert-base", 66_362_880),  # distilbert-base-uncased: DistilBertModel, which has no pooler
    ("roberta-base", 124_645_632),  # roberta-base: RobertaModel with its pooler
    ("xlm-roberta-base", 278_043_648),  # xlm-roberta-base: XLMRobertaModel with its pooler
])
def test_family_presets_count_the_published_models(name, published):
    counts = breakdown(preset(name))
    assert counts["total"] + counts["pooler"] == published


def test_random_family_presets_load_seeded():
    from neuron_encoder.models import load_model
    resolved = load_model("random:distilbert-base")
    assert resolved.encoder.config.family == "distilbert" and resolved.encoder.embeddings.segment is None
    assert resolved.model_id == "random:distilbert-base" and resolved.tokenizer is None
