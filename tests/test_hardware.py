"""The hardware probes: what they conclude from env vars, files and imports."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch

from neuron_encoder import hardware
from neuron_encoder.errors import ConfigError


def test_core_lists():
    assert hardware.parse_core_list("0-1") == [0, 1]
    assert hardware.parse_core_list("3") == [3]
    assert hardware.parse_core_list("3-5,6") == [3, 4, 5, 6]  # nrt-developer-guide.rst's own examples
    assert hardware.parse_core_list("3,4,5,6") == [3, 4, 5, 6]
    with pytest.raises(ConfigError, match="NEURON_RT_VISIBLE_CORES='a-b'"):
        hardware.parse_core_list("a-b")


@pytest.mark.parametrize("spec", ["3,5,6", "0,2-3", "1,0"])
def test_visible_core_lists_must_be_contiguous(spec):
    """The runtime refuses them ("The resulting range must be contiguous"); so do we, naming a fix."""
    with pytest.raises(ConfigError, match="not contiguous"):
        hardware.parse_core_list(spec)


@pytest.fixture
def host(monkeypatch):
    """Set the instance type and device count our probes see; no neuron-ls unless a test adds it."""
    for name in ("NEURON_RT_VISIBLE_CORES", "NEURON_RT_NUM_CORES", "NEURON_LOGICAL_NC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hardware, "neuron_ls_core_count", lambda: None)

    def make(instance, devices):
        monkeypatch.setattr(hardware, "ec2_instance_type", lambda: instance)
        monkeypatch.setattr(hardware, "neuron_device_count", lambda: devices)
    return make


@pytest.mark.parametrize("instance, devices, lnc, cores", [
    ("inf2.xlarge", 1, None, 2), ("inf2.24xlarge", 6, None, 12), ("inf2.48xlarge", 12, None, 24),
    ("trn1.2xlarge", 1, None, 2), ("trn1.32xlarge", 16, None, 32), ("trn1n.32xlarge", 16, None, 32),
    ("trn2.48xlarge", 16, None, 64), ("trn2.48xlarge", 16, "2", 64), ("trn2.48xlarge", 16, "1", 128),
    ("trn2u.48xlarge", 16, "1", 128), ("trn2.3xlarge", 1, None, 4), ("trn2.3xlarge", 1, "1", 8),
])
def test_core_counts_per_family_and_lnc(host, monkeypatch, instance, devices, lnc, cores):
    """logical-neuroncore-config.rst: trn2.48xlarge shows 64 cores at LNC=2 and 128 at LNC=1."""
    host(instance, devices)
    if lnc:
        monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", lnc)
    assert hardware.neuron_core_count() == cores


def test_inf2_and_trn1_have_no_lnc(host, monkeypatch):
    host("inf2.xlarge", 1)
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "1")
    assert hardware.neuron_core_count() == 2
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "4")
    with pytest.raises(ConfigError, match="1 or 2"):
        hardware.logical_nc_config()


def test_visible_cores_follow_the_runtime_variables(host, monkeypatch):
    host("inf2.24xlarge", 6)
    assert hardware.neuron_core_count() == 12
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "0")  # the runtime's default: all
    assert hardware.neuron_core_count() == 12
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "3")
    assert hardware.neuron_core_count() == 3
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "4-7")
    assert hardware.neuron_core_count() == 4  # VISIBLE_CORES wins over NUM_CORES


@pytest.mark.parametrize("variable, value, message", [
    ("NEURON_RT_NUM_CORES", "abc", "NEURON_RT_NUM_CORES='abc' is not a number"),
    ("NEURON_RT_NUM_CORES", "-1", "0 \\(all\\) or more"),
    ("NEURON_RT_NUM_CORES", "3", "NEURON_RT_NUM_CORES=3, but this host has 2 NeuronCores"),
    ("NEURON_RT_VISIBLE_CORES", "1-2", "names core 2, but this host has NeuronCores 0-1"),
    ("NEURON_RT_VISIBLE_CORES", "0,1,3", "not contiguous"),
])
def test_core_variables_the_runtime_would_refuse_are_config_errors(host, monkeypatch, variable, value, message):
    host("inf2.xlarge", 1)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        hardware.neuron_core_count()


def test_neuron_ls_counts_first(host, monkeypatch):
    """neuron-ls -j's nc_count per device (tools/neuron-sys-tools/neuron-ls.rst) wins over the table,
    and counts an unknown family; without either the error says what to set."""
    host(None, 2)
    with pytest.raises(ConfigError, match="set NEURON_RT_NUM_CORES or NEURON_RT_VISIBLE_CORES"):
        hardware.neuron_core_count()
    monkeypatch.setattr(hardware, "neuron_ls_core_count", lambda: 8)
    assert hardware.neuron_core_count() == 8


def test_neuron_ls_json_is_summed_over_devices(monkeypatch, tmp_path):
    script = tmp_path / "neuron-ls"
    script.write_text('#!/bin/sh\necho \'[{"neuron_device": 0, "nc_count": 4}, {"neuron_device": 1, "nc_count": 4}]\'\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    hardware.neuron_ls_core_count.cache_clear()
    try:
        assert hardware.neuron_ls_core_count() == 8
        script.write_text("#!/bin/sh\necho not json\n")
        hardware.neuron_ls_core_count.cache_clear()
        assert hardware.neuron_ls_core_count() is None
    finally:
        hardware.neuron_ls_core_count.cache_clear()


def test_a_container_without_its_devices_has_no_cores_and_says_how_to_fix_it(host, monkeypatch):
    """A `neuron` line in /proc/devices but no /dev/neuron*: zero cores, never a division by zero."""
    host("inf2.xlarge", 0)
    monkeypatch.setattr(hardware, "neuron_driver_loaded", lambda: True)
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: None)
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "0")
    assert hardware.neuron_core_count() == 0 and not hardware.has_neuron_devices()
    from neuron_encoder.backends.neuron import NeuronBackend
    assert "--device=/dev/neuron0" in NeuronBackend().run_problem()
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    assert "a container without its devices" in hardware.auto_backend()[1]


@pytest.mark.parametrize("flags, precision, reason", [
    ({"avx2", "fma"}, ("none", "bf16"), "fp32, this CPU has no native bf16"),
    ({"avx512f", "avx512_bf16"}, ("matmult", "bf16"), "natively (avx512_bf16)"),
    ({"avx512f", "amx_bf16", "amx_tile"}, ("matmult", "bf16"), "natively (amx_bf16)"),
])
def test_the_auto_policy_picks_bf16_only_on_cpus_with_native_bf16(monkeypatch, cpu_host, flags, precision, reason):
    cpu_host(*flags)
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


@pytest.mark.parametrize("flags", [{"avx2"}, {"avx512f", "amx_bf16", "amx_tile"}])
def test_the_cpu_precision_variable_overrides_the_flags_and_says_so(monkeypatch, cpu_host, caplog, flags):
    cpu_host(*flags)
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, "fp32")
    policy = hardware.auto_precision("cpu")
    assert policy.auto_cast == "none" and policy.reason == "auto: fp32 (NEURON_ENCODER_CPU_PRECISION)"
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, " BF16 ")
    hardware._warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="neuron_encoder.hardware"):
        for _ in range(2):
            policy = hardware.auto_precision("cpu")
    assert (policy.auto_cast, policy.auto_cast_type) == ("matmult", "bf16")
    assert policy.reason == "auto: bf16 (NEURON_ENCODER_CPU_PRECISION)"
    warnings = [r for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warnings) == (0 if "amx_bf16" in flags else 1)  # slow but allowed, said once
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, "auto")
    assert hardware.auto_precision("cpu").reason.startswith("auto: " + ("bf16, this CPU" if "amx_bf16" in flags
                                                                        else "fp32, this CPU"))
    # the override is the CPU's: accelerators keep their own policy
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, "fp32")
    assert hardware.auto_precision("cuda").auto_cast_type == "fp16"


@pytest.mark.parametrize("value", ["fp16", "float32", "yes"])
def test_a_bad_cpu_precision_names_the_accepted_values(monkeypatch, value):
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, value)
    with pytest.raises(ConfigError, match=f"NEURON_ENCODER_CPU_PRECISION='{value}': use one of auto, fp32, bf16"):
        hardware.auto_precision("cpu")


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


def test_missing_sdk(monkeypatch):
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: None)
    assert hardware.neuron_sdk_problem() == "torch_neuronx is not installed"


def test_torchneuron_native_is_not_the_sdk_we_trace_with(monkeypatch):
    """TorchNeuron (PyTorch 2.10+) shares the import name but has no trace()."""
    native = types.ModuleType("torch_neuronx")
    native.__version__ = "2.10.0"
    native.__spec__ = importlib.machinery.ModuleSpec("torch_neuronx", None)
    monkeypatch.setitem(sys.modules, "torch_neuronx", native)
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: native.__spec__)
    problem = hardware.neuron_sdk_problem()
    assert "has no trace()" in problem and "TorchNeuron" in problem and hardware.TORCH_NEURONX_PIN in problem


def test_versions_come_from_the_module_first(monkeypatch):
    from tests.neuron_double import NEURONX_CC_VERSION, install
    module = install(monkeypatch, devices=0)
    monkeypatch.setattr(module, "__version__", "2.9.0.2.99.1")  # the documented check wins over metadata
    assert hardware.neuron_versions() == {"torch-neuronx": "2.9.0.2.99.1", "neuronx-cc": NEURONX_CC_VERSION}


def test_the_install_hint_names_both_documented_pairs_and_the_pythons_torch_neuronx_takes():
    """setup/pytorch/manual.rst: Python 3.11, 3.12 or 3.13; the 2.32 pair for a fresh venv, the 2.31
    compiler for an artifact bound for the 2.31 SageMaker container (update-dlami.rst)."""
    hint = hardware.NEURON_INSTALL_HINT
    assert "neuronx-cc==2.27.5334.0 torch-neuronx==2.9.0.2.15.32035" in hint
    assert "neuronx-cc==2.26.6360.0 torch-neuronx==2.9.0.2.15.32035" in hint
    assert "Python 3.11, 3.12, 3.13 venv" in hint and "3.10" not in hint
    assert "https://pip.repos.neuron.amazonaws.com" in hint and "/opt/aws_neuronx_venv_pytorch_2_9" in hint


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
    assert info["neuron_driver"] == hardware.neuron_driver_loaded()
    assert isinstance(info["cpu"], str) and info["cpu_count"] >= 1


def test_ec2_instance_type_reads_dmi(monkeypatch, tmp_path):
    names = {"inf2.xlarge": "inf2.xlarge", "Standard PC (i440FX + PIIX, 1996)": None}
    for product, expected in names.items():
        hardware.ec2_instance_type.cache_clear()
        fake = types.SimpleNamespace(read_text=lambda p=product: p + "\n")
        monkeypatch.setattr(hardware, "Path", lambda path: fake)
        assert hardware.ec2_instance_type() == expected
    hardware.ec2_instance_type.cache_clear()


@pytest.mark.parametrize("variable, value, cores", [("NEURON_RT_NUM_CORES", "1", 1),
                                                    ("NEURON_RT_VISIBLE_CORES", "0-1", 2)])
def test_a_core_variable_counts_without_neuron_ls_or_an_instance_type(host, monkeypatch, variable, value, cores):
    """A SageMaker container may have neither neuron-ls nor an EC2 instance type in DMI; the handler's
    NEURON_RT_NUM_CORES=1 is enough to count by (issue 20, item 11)."""
    host(None, 1)
    monkeypatch.setenv(variable, value)
    assert hardware.neuron_core_count() == cores
