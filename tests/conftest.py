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


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory):
    """all-MiniLM-L6-v2 compiled for the CPU in four small buckets, once per session (the server's tests)."""
    from neuron_encoder.compiler import compile_model
    return compile_model("minilm", batch_sizes="1,4", seq_lens="16,32", backend="cpu",
                         out=tmp_path_factory.mktemp("serve") / "minilm", progress=lambda message: None).path


def tiny_text_model():
    """A tiny random encoder (seeded) with all-MiniLM-L6-v2's tokenizer and vocabulary size: text in,
    vectors out in a millisecond, for the server's load and fault tests."""
    import dataclasses
    from neuron_encoder.models import ResolvedModel
    from neuron_encoder.text import Tokenizer
    from neuron_encoder.weights import resolve
    config = dataclasses.replace(preset("tiny"), vocab_size=30522)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = Encoder(config).eval()
    return ResolvedModel(encoder, "random:tiny-text", Tokenizer(resolve("minilm")))


@pytest.fixture(scope="session")
def tiny_text_artifact(tmp_path_factory):
    """tiny_text_model compiled for the CPU, once per session."""
    from neuron_encoder.compiler import compile_model
    return compile_model(tiny_text_model(), batch_sizes="1,4", seq_lens="16,32,64", backend="cpu",
                         out=tmp_path_factory.mktemp("serve") / "tiny-text", progress=lambda message: None).path


@pytest.fixture
def inf2_host(monkeypatch):
    """An inf2.xlarge as the tests can fake it: one Inferentia2 chip (2 NeuronCores) and the SDK, which is
    tests/neuron_double.py, a test double of torch_neuronx."""
    from . import neuron_double
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: True)
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 1)
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
    monkeypatch.delenv("NEURON_RT_NUM_CORES", raising=False)
    return neuron_double.install(monkeypatch, devices=1)
