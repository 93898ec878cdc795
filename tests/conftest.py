"""Shared fixtures: a tiny config so most tests run in milliseconds, and the shipped real model."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder import Encoder, EncoderConfig, hardware, preset


@pytest.fixture(autouse=True)
def cpu_without_native_bf16(monkeypatch):
    """The auto policy as on a CPU without native bf16, whatever this machine has, so `auto` means fp32
    on the CPU in every test; tests of the policy itself set the flags they need."""
    flags = hardware.cpu_flags() - {"avx512_bf16", "amx_bf16"}
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)

pytest_plugins = ["tests.moto_server"]  # the deploy tests' moto server and AWS environment fixtures


@pytest.fixture(scope="session")
def tiny_config() -> EncoderConfig:
    return preset("tiny")


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
