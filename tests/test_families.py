"""Every encoder family against transformers on the same (random, locally built) checkpoint, through
eager, the CPU artifact and the Neuron trace (the test double); its parameter breakdown; bad checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from neuron_encoder import Encoder, load_compiled
from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model
from neuron_encoder.config import FAMILIES
from neuron_encoder.errors import CheckpointError, ConfigError
from neuron_encoder.numerics import compare_outputs
from neuron_encoder.params import breakdown, format_table

from .conftest import assert_close
from .families import PAD, build_checkpoint, padded_ids

pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """family -> (directory, transformers model), built once per session."""
    root = tmp_path_factory.mktemp("families")
    return {family: (root / family, build_checkpoint(family, root / family)) for family in FAMILIES}


def hidden_states(model, inputs):
    ids, mask, types = inputs
    with torch.no_grad():
        return model(ids, mask, types)


def test_every_family_has_a_checkpoint_builder():
    assert set(PAD) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fused", [True, False])
def test_family_matches_transformers_on_real_tokens_with_padding(checkpoints, family, fused):
    directory, hf = checkpoints[family]
    ours = Encoder.from_pretrained(directory).with_fused_attention(fused)
    assert ours.config.family == family
    for seq in (20, ours.config.max_length):  # the longest covers MPNet's far, log-spaced buckets
        ids, mask, types = padded_ids(family, seq=seq, pad_from=seq * 2 // 3)
        with torch.no_grad():
            expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = hidden_states(ours, (ids, mask, types))
        assert (got - expected)[mask.bool()].abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["roberta", "distilbert", "mpnet"])
def test_segment_ids_cannot_reach_a_missing_segment_row(checkpoints, family):
    """RoBERTa has one segment row and DistilBERT and MPNet none: a tokenizer's pair type ids change nothing."""
    ours = Encoder.from_pretrained(checkpoints[family][0])
    ids, mask, types = padded_ids(family)
    torch.testing.assert_close(hidden_states(ours, (ids, mask, types)), hidden_states(ours, (ids, mask, types + 1)))


@pytest.mark.parametrize("family", FAMILIES)
def test_cpu_artifact_agrees_with_eager(checkpoints, family, tmp_path):
    ours = Encoder.from_pretrained(checkpoints[family][0])
    result = compile_model(ours, batch_sizes="4", seq_lens="32", backend="cpu", out=tmp_path / "art",
                           progress=lambda message: None)
    inputs = padded_ids(family)
    with load_compiled(result.path) as compiled:
        got = compiled(*inputs)
    assert_close(got, hidden_states(ours, inputs), inputs[1], result.manifest["precision"])


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_traces_every_family(checkpoints, family, tmp_path, inf2_host):
    ours = Encoder.from_pretrained(checkpoints[family][0])
    result = compile_model(ours, batch_sizes="4", seq_lens="32", backend="neuron", out=tmp_path / "art",
                           options=CompileOptions(target="inf2", auto_cast="none"), progress=lambda message: None)
    assert result.manifest["buckets"][0]["numerics"]["verified"]
    inputs = padded_ids(family)
    with load_compiled(result.path) as compiled:
        got = compiled(*inputs)
    assert compare_outputs(got, hidden_states(ours, inputs), inputs[1])["max_abs"] <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_params_breakdown_equals_transformers_count(checkpoints, family):
    directory, hf = checkpoints[family]
    config = Encoder.from_pretrained(directory).config
    counts = breakdown(config)
    assert counts["total"] + counts["pooler"] == sum(p.numel() for p in hf.parameters())
    table = format_table(family, config, counts)
    assert f"({family})" in table and f"{counts['total']:,}" in table


def test_params_name_what_differs(checkpoints):
    electra = Encoder.from_pretrained(checkpoints["electra"][0]).config
    assert breakdown(electra)["embedding_projection"] == 16 * 32 + 32
    assert "projection 16->32" in format_table("electra", electra, breakdown(electra))
    mpnet = Encoder.from_pretrained(checkpoints["mpnet"][0]).config
    counts = breakdown(mpnet)
    assert counts["relative_bias"] == 32 * 4 and counts["segment_embeddings"] == 0
    assert "all layers share it" in format_table("mpnet", mpnet, counts)
    assert "(no segments)" in format_table("mpnet", mpnet, counts)
    albert = Encoder.from_pretrained(checkpoints["albert"][0]).config
    counts = breakdown(albert)
    assert counts["layers"] == 3 and counts["all_layers"] == counts["layer"]  # one shared layer, counted once
    assert "counted once" in format_table("albert", albert, counts)


def test_albert_with_several_layer_groups_is_refused(checkpoints, tmp_path):
    config = json.loads((checkpoints["albert"][0] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_groups": 3}))
    with pytest.raises(ConfigError, match=r"num_hidden_groups, inner_group_num = \(3, 1\) is not supported"):
        Encoder.from_pretrained(tmp_path)


def test_a_wrong_checkpoint_lists_every_mismatch(checkpoints, tmp_path):
    directory = checkpoints["distilbert"][0]
    state = load_file(str(directory / "model.safetensors"))
    del state["transformer.layer.1.ffn.lin2.weight"]
    state["transformer.layer.0.attention.q_lin.weight"] = torch.zeros(3, 3)
    state["transformer.layer.0.surprise.weight"] = torch.zeros(1)
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        Encoder.from_pretrained(tmp_path)
    message = str(info.value)
    assert "missing keys (1): layers.1.feed_forward.down.weight" in message
    assert "unexpected keys (1): transformer.layer.0.surprise.weight" in message
    assert "transformer.layer.0.attention.q_lin.weight: checkpoint (3, 3), model (32, 32)" in message


def test_an_unknown_model_type_names_the_supported_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="'gpt2' is not supported; supported families: bert, distilbert, "
                                              "roberta, xlm-roberta, camembert, electra, mpnet, albert"):
        Encoder.from_pretrained(tmp_path)
