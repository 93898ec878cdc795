"""The hardware probes: what they conclude from env vars, files and imports."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from neuron_encoder import hardware
from neuron_encoder.errors import ConfigError


def test_core_lists():
    assert hardware.parse_core_list("0-1") == [0, 1]
    assert hardware.parse_core_list("3") == [3]
    assert hardware.parse_core_list("0,2-3") == [0, 2, 3]
    with pytest.raises(ConfigError, match="NEURON_RT_VISIBLE_CORES='a-b'"):
        hardware.parse_core_list("a-b")


def test_visible_cores_follow_the_runtime_variables(monkeypatch):
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
    monkeypatch.delenv("NEURON_RT_NUM_CORES", raising=False)
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 1)
    assert hardware.neuron_core_count() == 2
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "1")
    assert hardware.neuron_core_count() == 1
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "0-3")
    assert hardware.neuron_core_count() == 4  # VISIBLE_CORES wins over NUM_CORES


def test_malformed_core_variables_are_config_errors(monkeypatch):
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "abc")
    with pytest.raises(ConfigError, match="NEURON_RT_NUM_CORES='abc' is not a number"):
        hardware.neuron_core_count()


@pytest.mark.parametrize("flags, precision, reason", [
    ({"avx2", "fma"}, ("none", "bf16"), "fp32, this CPU has no native bf16"),
    ({"avx512f", "avx512_bf16"}, ("matmult", "bf16"), "natively (avx512_bf16)"),
    ({"avx512f", "amx_bf16", "amx_tile"}, ("matmult", "bf16"), "natively (amx_bf16)"),
])
def test_the_auto_policy_picks_bf16_only_on_cpus_with_native_bf16(monkeypatch, flags, precision, reason):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    policy = hardware.auto_precision("cpu")
    assert (policy.auto_cast, policy.auto_cast_type) == precision and reason in policy.reason
    from neuron_encoder.backends import CompileOptions, select_backend
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: False)
    backend, options, why = select_backend("auto", CompileOptions())
    assert backend.name == "cpu" and options.precision == ("fp32" if precision[0] == "none" else "bf16")
    assert reason in why
    _, explicit, _ = select_backend("auto", CompileOptions(auto_cast="none"))
    assert explicit.precision == "fp32"  # the user can always say --auto-cast none


def test_the_auto_policy_for_accelerators():
    assert (hardware.auto_precision("neuron").auto_cast, hardware.auto_precision("neuron").auto_cast_type) == \
        ("matmult", "bf16")
    assert hardware.auto_precision("cuda").auto_cast_type == "fp16"


def test_pypi_placeholder_is_reported_as_not_usable(monkeypatch, tmp_path):
    """PyPI's torch-neuronx raises ImportError on import: found, but not usable."""
    package = tmp_path / "torch_neuronx"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('this is a placeholder package')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_neuronx", raising=False)
    problem = hardware.neuron_sdk_problem()
    assert problem is not None and "placeholder" in problem
    assert not hardware.is_neuron_sdk_available()


def test_missing_sdk(monkeypatch):
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: None)
    assert hardware.neuron_sdk_problem() == "torch_neuronx is not installed"


def test_cuda_devices(monkeypatch):
    if not torch.cuda.is_available():
        assert hardware.cuda_devices() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA A10G")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert hardware.cuda_devices() == {"name": "NVIDIA A10G", "count": 4}

    def broken(i):
        raise RuntimeError("CUDA driver version is insufficient")
    monkeypatch.setattr(torch.cuda, "get_device_name", broken)
    assert hardware.cuda_devices() is None  # logged, not raised: a benchmark record must not be lost


def test_describe_has_every_probe():
    info = hardware.describe()
    assert set(info) == {"neuron_devices", "neuron_driver", "neuron_sdk", "cuda", "cpu", "cpu_count", "cpu_fast_bf16"}
    assert isinstance(info["cpu"], str) and info["cpu_count"] >= 1


def test_ec2_instance_type_reads_dmi(monkeypatch, tmp_path):
    names = {"inf2.xlarge": "inf2.xlarge", "Standard PC (i440FX + PIIX, 1996)": None}
    for product, expected in names.items():
        hardware.ec2_instance_type.cache_clear()
        fake = types.SimpleNamespace(read_text=lambda p=product: p + "\n")
        monkeypatch.setattr(hardware, "Path", lambda path: fake)
        assert hardware.ec2_instance_type() == expected
    hardware.ec2_instance_type.cache_clear()
