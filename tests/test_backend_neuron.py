"""The Neuron backend against tests/neuron_double.py, a TEST DOUBLE of torch_neuronx that follows
../shared/NEURON.md. The same tests would pass against the real SDK on an inf2/trn1 host."""

from __future__ import annotations

import json

import pytest
import torch

from neuron_encoder import hardware, load_compiled
from neuron_encoder.backends import CompileOptions, select_backend
from neuron_encoder.backends.neuron import compiler_args, resolve_target
from neuron_encoder.compiler import compile_model
from neuron_encoder.numerics import compare_outputs, sample_inputs
from neuron_encoder.errors import ArtifactError, BackendUnavailable, CompileError, ConfigError

from . import neuron_double


@pytest.fixture
def build_host(monkeypatch):
    """The SDK but no devices: a CPU build host that cross-compiles."""
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: False)
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 0)
    return neuron_double.install(monkeypatch, devices=0)


@pytest.fixture
def inf2_xlarge(monkeypatch):
    """One Inferentia2 chip with 2 NeuronCores, and the SDK."""
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: True)
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 1)
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
    monkeypatch.delenv("NEURON_RT_NUM_CORES", raising=False)
    return neuron_double.install(monkeypatch, devices=1)


def test_compiler_args_always_state_target_type_cast_and_optlevel():
    assert compiler_args(CompileOptions(target="inf2", auto_cast="none"), "inf2") == [
        "--target", "inf2", "--model-type", "transformer", "--auto-cast", "none", "--optlevel", "2"]
    args = compiler_args(CompileOptions(auto_cast="matmult", auto_cast_type="bf16", optlevel=3,
                                        extra_args=("--enable-fast-loading-neuron-binaries",)), "trn1")
    assert args == ["--target", "trn1", "--model-type", "transformer", "--auto-cast", "matmult",
                    "--auto-cast-type", "bf16", "--optlevel", "3", "--enable-fast-loading-neuron-binaries"]


def test_target_comes_from_the_flag_the_env_or_the_instance(monkeypatch):
    monkeypatch.delenv("NEURON_PLATFORM_TARGET_OVERRIDE", raising=False)
    monkeypatch.setattr(hardware, "ec2_instance_type", lambda: None)
    with pytest.raises(ConfigError, match="pass --target"):
        resolve_target(CompileOptions())
    monkeypatch.setattr(hardware, "ec2_instance_type", lambda: "trn1.2xlarge")
    assert resolve_target(CompileOptions()) == "trn1"
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn2")
    assert resolve_target(CompileOptions()) == "trn2"
    assert resolve_target(CompileOptions(target="inf2")) == "inf2"


def test_without_the_sdk_neuron_is_an_error_with_instructions(monkeypatch):
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: "torch_neuronx is not installed")
    with pytest.raises(BackendUnavailable, match="Neuron pip repository"):
        select_backend("neuron", CompileOptions(target="inf2"))


def test_build_host_needs_a_target(build_host):
    with pytest.raises(BackendUnavailable, match="pass --target"):
        select_backend("neuron", CompileOptions())


def test_auto_prefers_neuron_when_devices_and_sdk_are_there(inf2_xlarge, monkeypatch):
    backend, _, reason = select_backend("auto", CompileOptions())
    assert backend.name == "neuron" and "Neuron devices" in reason


def test_auto_on_a_build_host_is_cpu_and_says_why(build_host, monkeypatch):
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    backend, options, reason = select_backend("auto", CompileOptions())
    assert backend.name == "cpu" and "no Neuron devices" in reason
    assert options.auto_cast == "none" and "no native bf16" in reason  # conftest: a CPU without bf16


def test_cross_compile_on_a_build_host(build_host, tiny_model, tmp_path):
    result = compile_model(tiny_model, batch_sizes="1,2", seq_lens="16", backend="neuron",
                           options=CompileOptions(target="inf2", auto_cast="none"), out=tmp_path / "art")
    calls = build_host.double.calls_to("trace")
    assert len(calls) == 2
    for call in calls:
        assert call.kwargs["cpu_backend"] is True
        assert call.kwargs["compiler_args"][:2] == ["--target", "inf2"]
        assert "--model-type" in call.kwargs["compiler_args"]
        assert [t.dtype for t in call.args[1]] == [torch.long] * 3
    shapes = [c.input_shapes for c in build_host.double.compilations]
    assert shapes == [[(1, 16)] * 3, [(2, 16)] * 3]
    m = result.manifest
    assert m["backend"] == "neuron" and m["target"] == "inf2"
    assert m["compiler_args"] == ["--target", "inf2", "--model-type", "transformer", "--auto-cast", "none",
                                  "--optlevel", "2"]
    assert m["versions"]["torch-neuronx"] == neuron_double.TORCH_NEURONX_VERSION
    assert m["versions"]["neuronx-cc"] == neuron_double.NEURONX_CC_VERSION
    assert all(b["numerics"]["verified"] is False for b in m["buckets"])
    assert (result.path / "workdirs" / "b1_s16" / "log-neuron-cc.txt").exists()
    with pytest.raises(ArtifactError, match="compiled for neuron/inf2, which this host cannot run"):
        load_compiled(result.path)


def test_auto_cast_auto_compiles_as_aws_published_bf16_matmuls(build_host, tiny_model, tmp_path):
    result = compile_model(tiny_model, batch_sizes="1", seq_lens="16", backend="neuron",
                           options=CompileOptions(target="inf2"), out=tmp_path / "art")
    args = result.manifest["compiler_args"]
    assert args[args.index("--auto-cast") + 1] == "matmult" and args[args.index("--auto-cast-type") + 1] == "bf16"
    assert result.manifest["precision"] == "bf16" and "auto: bf16 matmuls" in result.manifest["backend_reason"]


def test_cross_compiled_artifact_is_verified_on_first_load_on_the_device(build_host, tiny_model, tmp_path,
                                                                         monkeypatch, tiny_config):
    out = compile_model(tiny_model, batch_sizes="2", seq_lens="16", backend="neuron",
                        options=CompileOptions(target="inf2", auto_cast="none"), out=tmp_path / "art").path
    # Carry the artifact to an inf2 instance.
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: True)
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 1)
    build_host.double.devices = 1
    model = load_compiled(out, replicas=1)
    manifest = json.loads((out / "manifest.json").read_text())
    numerics = manifest["buckets"][0]["numerics"]
    assert numerics["verified"] and numerics["passed"] and numerics["max_abs"] < 1e-3
    ids, mask, types = sample_inputs(tiny_config, 3, 10, seed=5)
    with torch.no_grad():
        assert compare_outputs(model(ids, mask, types), tiny_model(ids, mask, types), mask)["max_abs"] < 1e-4
    load_compiled(out, replicas=1)  # the updated manifest still matches its files


def test_on_device_compile_is_verified_and_runs_on_every_visible_core(inf2_xlarge, tiny_model, tmp_path,
                                                                        tiny_config):
    result = compile_model(tiny_model, batch_sizes="4", seq_lens="16", backend="neuron",
                           options=CompileOptions(target="inf2", auto_cast="matmult", auto_cast_type="bf16"),
                           out=tmp_path / "art")
    assert inf2_xlarge.double.calls_to("trace")[0].kwargs["cpu_backend"] is False
    numerics = result.manifest["buckets"][0]["numerics"]
    assert numerics["verified"] and numerics["rule"].startswith("min cosine") and numerics["max_abs"] > 0
    model = load_compiled(result.path)  # replicas default to the visible cores: one copy per core
    ids, mask, types = sample_inputs(tiny_config, 4, 16, seed=2)
    inf2_xlarge.double.executions.clear()  # the gate ran the bucket once already
    for _ in range(2):
        got = model(ids, mask, types)
        with torch.no_grad():
            assert compare_outputs(got, tiny_model(ids, mask, types), mask)["min_cosine"] > 0.99
    assert sorted(e.core for e in inf2_xlarge.double.executions) == [0, 1]  # successive calls, both cores


def test_visible_cores_limit_the_replicas(inf2_xlarge, tiny_model, tmp_path, monkeypatch):
    out = compile_model(tiny_model, batch_sizes="2", seq_lens="8", backend="neuron",
                        options=CompileOptions(target="inf2"), out=tmp_path / "art").path
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "1")
    assert hardware.neuron_core_count() == 1
    model = load_compiled(out)
    inf2_xlarge.double.executions.clear()
    for _ in range(3):
        model(torch.ones(2, 8, dtype=torch.long))
    assert len({e.core for e in inf2_xlarge.double.executions}) == 1  # one visible core: one copy


def test_compiler_failure_is_a_compile_error_naming_the_logs(build_host, tiny_model, tmp_path):
    with pytest.raises(CompileError, match="neuronx-cc failed.*logs in"):
        compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="neuron", out=tmp_path / "art",
                      options=CompileOptions(target="inf2", extra_args=("--no-such-flag",)))
    assert not (tmp_path / "art").exists()
