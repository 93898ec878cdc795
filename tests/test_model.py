"""The encoder against Hugging Face's BertModel on the same weights, and against its own trace."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder import Encoder, preset
from neuron_encoder.model import pool
from neuron_encoder.weights import convert_hf_state_dict

from .conftest import random_inputs

transformers = pytest.importorskip("transformers")


def hf_pair(config, seed=0):
    """A Hugging Face BertModel with random weights and our Encoder holding the same weights."""
    torch.manual_seed(seed)
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps)
    hf = transformers.BertModel(hf_config, add_pooling_layer=False).eval()
    ours = Encoder(config).eval()
    ours.load_state_dict(convert_hf_state_dict(hf.state_dict(), ours))
    return hf, ours


def assert_matches_hf(hf, ours, inputs, atol=1e-4):
    ids, mask, types = inputs
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(ids, mask, types)
    real = mask.bool()  # padded positions are garbage in both models; only real tokens count
    assert got.shape == expected.shape
    assert (got - expected)[real].abs().max().item() < atol


@pytest.mark.parametrize("fused", [True, False])
def test_tiny_matches_hugging_face_with_padding_and_segments(tiny_config, fused):
    hf, ours = hf_pair(tiny_config)
    assert_matches_hf(hf, ours.with_fused_attention(fused), random_inputs(tiny_config, batch=3, seq=20, pad_from=12))


def test_the_other_attention_form_is_a_twin_that_shares_the_weights(tiny_model, tiny_config):
    """with_fused_attention leaves the caller's model as it was (no flag flipped on it) and copies nothing."""
    twin = tiny_model.with_fused_attention(False)
    assert twin is not tiny_model and tiny_model.fused_attention and not twin.fused_attention
    assert all(layer.attention.fused for layer in tiny_model.layers)
    assert not any(layer.attention.fused for layer in twin.layers)
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(tiny_model.parameters(), twin.parameters()))
    assert tiny_model.with_fused_attention(True) is tiny_model
    ids, mask, types = random_inputs(tiny_config, batch=2, seq=12, pad_from=8)
    with torch.no_grad():
        assert (twin(ids, mask, types) - tiny_model(ids, mask, types))[mask.bool()].abs().max() < 1e-5


def test_tiny_matches_hugging_face_without_mask(tiny_config):
    hf, ours = hf_pair(tiny_config)
    ids, _, types = random_inputs(tiny_config, batch=2, seq=16)
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=types).last_hidden_state
        assert (ours(ids, token_type_ids=types) - expected).abs().max() < 1e-4


@pytest.mark.slow
def test_bert_base_matches_hugging_face():
    config = preset("bert-base")
    hf, ours = hf_pair(config)
    assert_matches_hf(hf, ours, random_inputs(config, batch=2, seq=64, pad_from=40))


def test_comparison_can_fail(tiny_config):
    """The HF comparison detects a wrong weight: the test above is not vacuous."""
    hf, ours = hf_pair(tiny_config)
    with torch.no_grad():
        ours.layers[1].attention.qkv.weight[-tiny_config.hidden_size:].mul_(1.01)  # W_V
    with pytest.raises(AssertionError):
        assert_matches_hf(hf, ours, random_inputs(tiny_config, batch=2, seq=16))


def test_padding_does_not_change_real_tokens(tiny_model, tiny_config):
    ids, mask, types = random_inputs(tiny_config, batch=1, seq=10)
    padded_ids = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 6, dtype=torch.long)], 1)
    padded_types = torch.cat([types, torch.zeros(1, 6, dtype=torch.long)], 1)
    with torch.no_grad():
        short = tiny_model(ids, mask, types)
        long = tiny_model(padded_ids, padded_mask, padded_types)
    torch.testing.assert_close(long[:, :10], short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_traced_equals_eager(tiny_config, norm_first):
    torch.manual_seed(0)
    model = Encoder(tiny_config.replace(norm_first=norm_first)).eval()
    inputs = random_inputs(tiny_config, batch=2, seq=16, pad_from=9)
    with torch.no_grad():
        traced = torch.jit.trace(model, inputs)
        other = random_inputs(tiny_config, batch=2, seq=16, seed=1, pad_from=5)
        torch.testing.assert_close(traced(*other), model(*other), atol=1e-6, rtol=1e-6)


def test_pre_norm_differs_from_post_norm_and_has_a_final_norm(tiny_config):
    torch.manual_seed(0)
    post = Encoder(tiny_config).eval()
    with torch.no_grad():  # large weights, so the sublayers move the residual stream visibly
        for p in post.layers.parameters():
            p.normal_(std=0.3)
    pre = Encoder(tiny_config.replace(norm_first=True)).eval()
    pre.load_state_dict(post.state_dict(), strict=False)
    assert pre.final_norm is not None and post.final_norm is None
    inputs = random_inputs(tiny_config, batch=1, seq=8)
    with torch.no_grad():
        assert (pre(*inputs) - post(*inputs)).abs().max() > 0.1


def test_pooling_modes():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "cls", False).tolist() == [[1.0, 0.0]]
    assert pool(hidden, mask, "mean", False).tolist() == [[2.0, 2.0]]  # the padded token is ignored
    torch.testing.assert_close(pool(hidden, mask, "mean", True), torch.tensor([[0.7071068, 0.7071068]]))


def test_embed_uses_config_pooling(tiny_config):
    torch.manual_seed(0)
    model = Encoder(tiny_config.replace(pooling="mean", normalize=True)).eval()
    ids, mask, types = random_inputs(tiny_config, batch=2, seq=8)
    with torch.no_grad():
        vectors = model.embed(ids, mask, types)
    assert vectors.shape == (2, tiny_config.hidden_size)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2))
