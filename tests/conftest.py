"""Shared fixtures: a tiny config so most tests run in milliseconds, and the shipped real model."""

from __future__ import annotations

import os

import pytest
import torch

from neuron_encoder import Encoder, EncoderConfig, hardware, platforms, preset


# The CPU's auto precision is fixed for the whole session, before any fixture of any scope and for every
# subprocess (servers, CLIs): fp32 unless the run asks for bf16 (.ci/run runs the suite under both), so
# no test depends on whether this host has native bf16. Tests of the policy itself use `cpu_host`.
os.environ.setdefault(hardware.CPU_PRECISION_VARIABLE, "fp32")


def cpu_precision() -> str:
    """What `--auto-cast auto` compiles to on the CPU in this run: fp32 or bf16."""
    return "fp32" if hardware.auto_precision("cpu").auto_cast == "none" else "bf16"


def assert_close(got: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor, precision: str) -> None:
    """A compiled output against eager fp32 on the real tokens: 1e-4 at fp32, the gate's cosine at bf16 (for a
    classifier's logits, the gate's logit error). A routing, padding or splitting fault breaks both by far more."""
    from neuron_encoder.numerics import Tolerance, compare_outputs
    numerics = compare_outputs(got, expected, mask)
    if precision == "fp32":
        assert numerics["max_abs"] < 1e-4, numerics
    elif "logit_error" in numerics:
        assert numerics["logit_error"] <= Tolerance().max_logit_error, numerics
    else:
        assert numerics["min_cosine"] >= Tolerance().min_cosine, numerics


@pytest.fixture
def cpu_host(monkeypatch):
    """A factory: this CPU as one with `flags`, the auto policy deciding by them (no override)."""
    def make(*flags: str) -> None:
        monkeypatch.delenv(hardware.CPU_PRECISION_VARIABLE, raising=False)
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    return make


pytest_plugins = ["tests.moto_server"]  # the deploy tests' moto server and AWS environment fixtures


@pytest.fixture(scope="session")
def tiny_config() -> EncoderConfig:
    return preset("tiny")


@pytest.fixture
def tiny_model(tiny_config) -> Encoder:
    torch.manual_seed(0)
    return Encoder(tiny_config).eval()


@pytest.fixture(scope="session")
def minilm_resolved():
    """The shipped all-MiniLM-L6-v2 as the commands resolve it: encoder, id, tokenizer, directory."""
    from neuron_encoder.models import load_model
    return load_model("minilm")


@pytest.fixture(scope="session")
def minilm(minilm_resolved) -> Encoder:
    return minilm_resolved.encoder


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


NEURON_VARIABLES = ("NEURON_RT_VISIBLE_CORES", "NEURON_RT_NUM_CORES", "NEURON_LOGICAL_NC_CONFIG",
                    "NEURON_PLATFORM_TARGET_OVERRIDE")


@pytest.fixture
def neuron_host(monkeypatch):
    """A factory: make this machine look like a Neuron host to our probes (instance type, /dev/neuron*,
    the driver, no neuron-ls) and install the torch_neuronx TEST DOUBLE (tests/neuron_double.py) for it.

    neuron_host("inf2.xlarge") is one inf2 chip; neuron_host(None, devices=0) a CPU build host with the
    SDK. Calling it again carries the artifacts to another host: a new process, with a fresh runtime.
    """
    from tests.neuron_double import install

    def make(instance: str | None = "inf2.xlarge", devices: int = 1, **kwargs):
        for name in NEURON_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(hardware, "ec2_instance_type", lambda: instance)
        monkeypatch.setattr(hardware, "neuron_device_count", lambda: devices)
        monkeypatch.setattr(hardware, "has_neuron_devices", lambda: devices > 0)
        monkeypatch.setattr(hardware, "neuron_driver_loaded", lambda: devices > 0)
        monkeypatch.setattr(hardware, "neuron_ls_core_count", lambda: None)
        platform = platforms.target_of(instance or "") or "inf2"
        return install(monkeypatch, devices=devices, platform=platform, **kwargs)
    return make


@pytest.fixture
def inf2_host(monkeypatch, neuron_host, cpu_host):
    """An inf2.xlarge as far as our probes can tell: one Neuron device (2 cores) and the SDK (the double)."""
    cpu_host("avx2")
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    return neuron_host("inf2.xlarge", devices=1)
