"""Shared fixtures: a tiny config so most tests run in milliseconds, and the shipped real model."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder import Encoder, EncoderConfig


@pytest.fixture(scope="session")
def tiny_config() -> EncoderConfig:
    return EncoderConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=128)


@pytest.fixture
def tiny_model(tiny_config) -> Encoder:
    torch.manual_seed(0)
    return Encoder(tiny_config).eval()


@pytest.fixture(scope="session")
def minilm() -> Encoder:
    return Encoder.from_pretrained("minilm")


def random_inputs(config: EncoderConfig, batch: int, seq: int, seed: int = 0, pad_from: int | None = None):
    """Token ids, a padding mask (rows after the first padded from `pad_from`), segment ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    if pad_from is not None:
        mask[1:, pad_from:] = 0
        ids[mask == 0] = config.pad_token_id
    types = torch.zeros_like(ids)
    types[:, seq // 2:] = 1
    return ids, mask, types
