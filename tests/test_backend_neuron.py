"""The Neuron backend against tests/neuron_double.py, a TEST DOUBLE of torch_neuronx that follows the
Neuron SDK's documentation (each rule with its source in the double).

What these tests prove: that our code makes the documented calls with the documented arguments, reads
the documented variables, and refuses what the docs say cannot work, as the double reproduces the SDK.
They cannot prove the SDK behaves as documented, or the parts the docs leave out (the double's
"stand-in" messages): tests/test_neuron_device.py (marker `neuron`) runs the same paths on the real SDK
and devices, via scripts/neuron-check.sh on an inf2/trn1/trn2 instance.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from neuron_encoder import Encoder, artifact, hardware, load_compiled
from neuron_encoder.backends import CompileOptions, select_backend
from neuron_encoder.backends.neuron import PUBLISHED_ARGS, compiler_args, published_options, resolve_target
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import ArtifactError, BackendUnavailable, CompileError, ConfigError
from neuron_encoder.numerics import compare_outputs, sample_inputs

from . import neuron_double
from .conftest import cpu_precision

FP32_INF2 = CompileOptions(target="inf2", auto_cast="none")


@pytest.fixture
def build_host(neuron_host):
    """The SDK but no devices: a CPU build host that cross-compiles."""
    return neuron_host(None, devices=0)


@pytest.fixture
def inf2_xlarge(neuron_host):
    """One Inferentia2 chip with 2 NeuronCores, and the SDK."""
    return neuron_host("inf2.xlarge", devices=1)


def compile_tiny(model, out, options=FP32_INF2, batch_sizes="2", seq_lens="16"):
    return compile_model(model, batch_sizes=batch_sizes, seq_lens=seq_lens, backend="neuron", options=options,
                         out=out)


def test_compiler_args_always_state_target_type_cast_and_optlevel():
    assert compiler_args(CompileOptions(target="inf2", auto_cast="none"), "inf2") == [
        "--target", "inf2", "--model-type", "transformer", "--auto-cast", "none", "--optlevel", "2"]
    args = compiler_args(CompileOptions(auto_cast="matmult", auto_cast_type="bf16", optlevel=3,
                                        extra_args=("--enable-fast-loading-neuron-binaries",)), "trn1")
    assert args == ["--target", "trn1", "--model-type", "transformer", "--auto-cast", "matmult",
                    "--auto-cast-type", "bf16", "--optlevel", "3", "--enable-fast-loading-neuron-binaries"]


def test_lnc_is_passed_for_trn2_and_refused_elsewhere():
    assert compiler_args(CompileOptions(auto_cast="none", lnc=1), "trn2")[6:8] == ["--logical-nc-config", "1"]
    for target in ("inf2", "trn1", "trn1n"):
        with pytest.raises(ConfigError, match=f"--lnc 2 is for trn2 only.*{target}"):
            compiler_args(CompileOptions(auto_cast="none", lnc=2), target)
        # EARG001.rst: on inf2/trn1 only lnc=1 is supported, so --lnc 1 is passed, not refused
        assert compiler_args(CompileOptions(auto_cast="none", lnc=1), target)[6:8] == ["--logical-nc-config", "1"]
    with pytest.raises(ConfigError, match="pass the logical NeuronCore config as --lnc"):
        compiler_args(CompileOptions(auto_cast="none", extra_args=("-lnc", "1")), "trn2")
    with pytest.raises(ConfigError, match="lnc 3 must be 1 or 2"):
        CompileOptions(lnc=3)


def test_target_comes_from_the_flag_the_env_or_the_instance(monkeypatch):
    monkeypatch.delenv("NEURON_PLATFORM_TARGET_OVERRIDE", raising=False)
    monkeypatch.setattr(hardware, "ec2_instance_type", lambda: None)
    with pytest.raises(ConfigError, match="pass --target"):
        resolve_target(CompileOptions())
    monkeypatch.setattr(hardware, "ec2_instance_type", lambda: "trn1.2xlarge")
    assert resolve_target(CompileOptions()) == "trn1"
    monkeypatch.setattr(hardware, "ec2_instance_type", lambda: "trn2u.48xlarge")
    assert resolve_target(CompileOptions()) == "trn2"
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn1n")
    assert resolve_target(CompileOptions()) == "trn1n"
    assert resolve_target(CompileOptions(target="inf2")) == "inf2"


def test_without_the_sdk_neuron_is_an_error_with_the_pinned_install(monkeypatch):
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: "torch_neuronx is not installed")
    with pytest.raises(BackendUnavailable, match="neuronx-cc==2.27.5334.0 torch-neuronx==2.9.0.2.15.32035"):
        select_backend("neuron", CompileOptions(target="inf2"))


def test_build_host_needs_a_target(build_host):
    with pytest.raises(BackendUnavailable, match="pass --target"):
        select_backend("neuron", CompileOptions())


def test_auto_prefers_neuron_when_devices_and_sdk_are_there(inf2_xlarge):
    backend, options, reason = select_backend("auto", CompileOptions())
    assert backend.name == "neuron" and "Neuron devices" in reason
    assert options.target == "inf2"  # inferred, and made explicit for the manifest and the cache key


def test_auto_on_a_build_host_is_cpu_and_says_why(build_host, monkeypatch):
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    backend, options, reason = select_backend("auto", CompileOptions())
    assert backend.name == "cpu" and "no Neuron devices" in reason
    assert options.precision == cpu_precision() and hardware.auto_precision("cpu").reason in reason


def test_cross_compile_on_a_build_host(build_host, tiny_model, tmp_path):
    result = compile_tiny(tiny_model, tmp_path / "art", batch_sizes="1,2")
    calls = build_host.double.calls_to("trace")
    assert len(calls) == 2
    for call in calls:
        assert call.kwargs["cpu_backend"] is True
        assert call.kwargs["compiler_args"][:2] == ["--target", "inf2"]
        assert call.kwargs["compiler_args"][-2] == "--logfile"  # never the process's working directory
        assert [t.dtype for t in call.args[1]] == [torch.long] * 3
    shapes = [c.input_shapes for c in build_host.double.compilations]
    assert shapes == [[(1, 16)] * 3, [(2, 16)] * 3]
    m = result.manifest
    assert m["backend"] == "neuron" and m["target"] == "inf2" and m["options"]["target"] == "inf2"
    assert m["compiler_args"] == ["--target", "inf2", "--model-type", "transformer", "--auto-cast", "none",
                                  "--optlevel", "2"]
    assert m["versions"]["torch-neuronx"] == neuron_double.TORCH_NEURONX_VERSION
    assert m["versions"]["neuronx-cc"] == neuron_double.NEURONX_CC_VERSION
    assert all(b["numerics"]["verified"] is False for b in m["buckets"])
    logs = result.path / artifact.LOGS / "b1_s16"
    assert "Compiler status PASS" in (logs / "log-neuron-cc.txt").read_text()
    assert "neuronx-cc compile" in (logs / "command.txt").read_text()
    with pytest.raises(ArtifactError, match="compiled for neuron/inf2, which this host cannot run"):
        load_compiled(result.path)


def test_an_inferred_target_is_recorded(inf2_xlarge, tiny_model, tmp_path):
    result = compile_tiny(tiny_model, tmp_path / "art", options=CompileOptions(auto_cast="none"))
    assert result.manifest["target"] == "inf2" and result.manifest["options"]["target"] == "inf2"
    assert inf2_xlarge.double.compilations[0].target == "inf2"


def test_the_artifact_keeps_the_log_not_the_compiler_work_files(build_host, tiny_model, tmp_path):
    """A real workdir holds graph.hlo, a .npy copy of every weight and the NEFF (the double writes them):
    none of it enters the artifact, and the temporary work directory is gone afterwards."""
    result = compile_tiny(tiny_model, tmp_path / "art", batch_sizes="1,2")
    files = [p for p in result.path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".npy", ".neff", ".hlo")]
    payload = sum(p.stat().st_size for p in files if p.parent.name == "buckets" or p.name == "reference.pt")
    total = sum(p.stat().st_size for p in files)
    assert total <= 1.05 * payload, (total, payload)
    weights = sum(t.numel() * t.element_size() for t in tiny_model.state_dict().values())
    assert payload >= 2 * weights  # the NEFF inlines the weights, in each of the two buckets
    for compilation in build_host.double.compilations:
        assert not (tmp_path / "art").resolve() in Path(compilation.compiler_workdir).resolve().parents
        assert not Path(compilation.compiler_workdir).exists()


def test_published_options_are_aws_measured_setting():
    options = published_options(CompileOptions(target="inf2"))
    assert (options.auto_cast, options.auto_cast_type) == ("matmult", "bf16")
    assert options.extra_args == PUBLISHED_ARGS == ("--disable-mixed-precision-accumulation",)
    explicit = CompileOptions(target="inf2", auto_cast="none")
    assert published_options(explicit) is explicit  # the user's choice stands


def test_auto_cast_auto_compiles_as_aws_published_bf16_matmuls(build_host, tiny_model, tmp_path):
    result = compile_tiny(tiny_model, tmp_path / "art", options=CompileOptions(target="inf2"), batch_sizes="1")
    args = result.manifest["compiler_args"]
    assert args[args.index("--auto-cast") + 1] == "matmult" and args[args.index("--auto-cast-type") + 1] == "bf16"
    assert result.manifest["precision"] == "bf16" and "auto: bf16 matmuls" in result.manifest["backend_reason"]


def test_cross_compiled_artifact_is_verified_on_first_load_on_the_device(build_host, neuron_host, tiny_model,
                                                                         tmp_path, tiny_config):
    out = compile_tiny(tiny_model, tmp_path / "art").path
    neuron_host("inf2.xlarge", devices=1)  # carry the artifact to an inf2 instance
    before = (out / "manifest.json").read_bytes()
    load_compiled(out, replicas=1, record_verification=False).close()  # verified, and nothing written
    assert (out / "manifest.json").read_bytes() == before
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
    result = compile_tiny(tiny_model, tmp_path / "art", batch_sizes="4",
                          options=CompileOptions(target="inf2", auto_cast="matmult", auto_cast_type="bf16"))
    assert inf2_xlarge.double.calls_to("trace")[0].kwargs["cpu_backend"] is False
    numerics = result.manifest["buckets"][0]["numerics"]
    assert numerics["verified"] and numerics["rule"].startswith("min cosine") and numerics["max_abs"] > 0
    model = load_compiled(result.path)  # replicas default to the visible cores: one copy per core
    assert model.placement == {"b4_s16": (0, 1)}
    ids, mask, types = sample_inputs(tiny_config, 4, 16, seed=2)
    inf2_xlarge.double.executions.clear()  # the gate ran the bucket once already
    for _ in range(2):
        got = model(ids, mask, types)
        with torch.no_grad():
            assert compare_outputs(got, tiny_model(ids, mask, types), mask)["min_cosine"] > 0.99
    assert [e.core for e in inf2_xlarge.double.executions] == [0, 1]  # successive calls, both cores


def test_a_classifier_is_traced_with_its_head_and_gated_on_its_logits(inf2_xlarge, tiny_config, tmp_path):
    torch.manual_seed(0)
    classifier = Encoder(tiny_config.replace(num_labels=3)).eval()
    result = compile_tiny(classifier, tmp_path / "art", batch_sizes="4",
                          options=CompileOptions(target="inf2", auto_cast="matmult", auto_cast_type="bf16"))
    numerics = result.manifest["buckets"][0]["numerics"]
    assert numerics["verified"] and numerics["rule"].startswith("max abs logit error")
    assert result.manifest["task"]["kind"] == "classifier"
    model = load_compiled(result.path, replicas=1)
    ids, mask, types = sample_inputs(tiny_config, 3, 12, seed=2)  # padded to the (4, 16) bucket
    got = model.logits(ids, mask, types)
    with torch.no_grad():
        expected = classifier(ids, mask, types)
    assert got.shape == (3, 3) and compare_outputs(got, expected, mask)["logit_error"] <= 0.05


def test_each_replica_is_on_its_own_core_whatever_else_is_loaded(build_host, neuron_host, tiny_model, tmp_path):
    """The runtime's default places a load on the least used core, so another live model would shift
    the copies; the placement API puts copy i on core i."""
    out = compile_tiny(tiny_model, tmp_path / "art").path
    device = neuron_host("inf2.24xlarge", devices=6)
    other = torch.jit.load(str(out / "buckets" / "b2_s16.pt"))  # default placement: core 0
    model = load_compiled(out, replicas=3)
    assert model.placement == {"b2_s16": (0, 1, 2)}
    starts = sorted(p.start_nc for p in device.double.placements.values())
    assert starts == [0, 0, 1, 2]
    server_replica = load_compiled(out, replicas=1, start_core=5)  # the server's hook: replica i on core i
    assert server_replica.placement == {"b2_s16": (5,)}
    device.double.executions.clear()
    server_replica(torch.ones(2, 16, dtype=torch.long))
    assert [e.core for e in device.double.executions] == [5]
    with pytest.raises(ConfigError, match="need cores 11-12, but this process sees 12"):
        load_compiled(out, replicas=2, start_core=11)
    with pytest.raises(ConfigError, match="need cores 12-12, but this process sees 12"):
        load_compiled(out, start_core=12)
    model.close()
    server_replica.close()
    del other
    gc.collect()
    assert not device.double.placements  # closing gives every core back


def test_visible_cores_limit_the_replicas(build_host, neuron_host, tiny_model, tmp_path, monkeypatch):
    out = compile_tiny(tiny_model, tmp_path / "art", seq_lens="8").path
    device = neuron_host("inf2.xlarge", devices=1)
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "1")  # set before the process's runtime starts
    assert hardware.neuron_core_count() == 1
    model = load_compiled(out)
    assert model.placement == {"b2_s8": (0,)}  # core 1 of the chip is index 0 of the visible ones
    for _ in range(3):
        model(torch.ones(2, 8, dtype=torch.long))
    assert {e.core for e in device.double.executions} == {0}


def test_the_placement_api_from_before_neuron_2_25_still_places(build_host, neuron_host, tiny_model, tmp_path,
                                                                monkeypatch):
    out = compile_tiny(tiny_model, tmp_path / "art").path
    device = neuron_host("inf2.xlarge", devices=1)
    context = device.neuron_cores_context
    monkeypatch.delattr(device, "neuron_cores_context")  # before 2.25 only torch_neuronx.experimental had it
    monkeypatch.setattr(device.experimental, "neuron_cores_context", context)
    assert load_compiled(out, replicas=2).placement == {"b2_s16": (0, 1)}
    assert [c.kwargs["start_nc"] for c in device.double.calls_to("neuron_cores_context")] == [0, 1]


def test_a_container_without_its_devices_is_refused_with_the_fix(build_host, neuron_host, tiny_model, tmp_path,
                                                                 monkeypatch):
    out = compile_tiny(tiny_model, tmp_path / "art").path
    neuron_host("inf2.xlarge", devices=0)
    monkeypatch.setattr(hardware, "neuron_driver_loaded", lambda: True)  # /proc/devices lists the driver
    assert hardware.neuron_core_count() == 0
    with pytest.raises(ArtifactError, match="--device=/dev/neuron0"):
        load_compiled(out)


def test_a_trn2_artifact_is_refused_on_an_inf2_host_and_the_reverse(build_host, neuron_host, tiny_model, tmp_path):
    trn2 = compile_tiny(tiny_model, tmp_path / "trn2", options=CompileOptions(target="trn2", auto_cast="none")).path
    inf2 = compile_tiny(tiny_model, tmp_path / "inf2").path
    device = neuron_host("inf2.xlarge", devices=1)
    with pytest.raises(ArtifactError, match=r"compiled for trn2 \(NeuronCore-v3\), but this host is inf2 "
                                            r"\(NeuronCore-v2\).*--target inf2"):
        load_compiled(trn2)
    assert not device.double.placements  # refused before anything was loaded
    neuron_host("trn2.48xlarge", devices=16)
    with pytest.raises(ArtifactError, match=r"compiled for inf2 .* but this host is trn2"):
        load_compiled(inf2)


def test_compiling_for_another_generation_on_a_neuron_host_traces_on_the_cpu(inf2_xlarge, tiny_model, tmp_path):
    """trace() loads its result onto a NeuronCore unless cpu_backend=True: trn2 code on an inf2 host must
    not be loaded, nor checked there (issue 20, item 1); the same generation is still verified here."""
    result = compile_tiny(tiny_model, tmp_path / "trn2", options=CompileOptions(target="trn2", auto_cast="none"))
    assert [c.kwargs["cpu_backend"] for c in inf2_xlarge.double.calls_to("trace")] == [True]
    assert result.manifest["buckets"][0]["numerics"]["verified"] is False
    assert not inf2_xlarge.double.placements and not inf2_xlarge.double.executions
    trn1 = compile_tiny(tiny_model, tmp_path / "trn1", options=CompileOptions(target="trn1", auto_cast="none"))
    assert inf2_xlarge.double.calls_to("trace")[-1].kwargs["cpu_backend"] is False
    assert trn1.manifest["buckets"][0]["numerics"]["verified"] is True


def test_inf2_code_on_trn1_warns_without_claiming_aws_said_it_is_safe(build_host, neuron_host, tiny_model,
                                                                       tmp_path, caplog):
    out = compile_tiny(tiny_model, tmp_path / "art").path
    neuron_host("trn1.2xlarge", devices=1)
    with caplog.at_level(logging.WARNING, logger="neuron_encoder.runtime"):
        load_compiled(out, replicas=1).close()
    assert "compiled for inf2, and this host is trn1" in caplog.text
    assert "AWS documents only trn1 code on inf2" in caplog.text and "safe" not in caplog.text


def test_trn1_code_runs_on_trn2_only_when_the_runtime_allows_legacy_neffs(build_host, neuron_host, tiny_model,
                                                                          tmp_path, monkeypatch, caplog):
    """configuration-guide.rst: NEURON_RT_ALLOW_LEGACY_NEFF=TRUE lets trn1 NEFFs run on trn2 (runtime 2.25+)."""
    out = compile_tiny(tiny_model, tmp_path / "art", options=CompileOptions(target="trn1", auto_cast="none")).path
    neuron_host("trn2.3xlarge", devices=1)
    with pytest.raises(ArtifactError, match="NEURON_RT_ALLOW_LEGACY_NEFF=TRUE"):
        load_compiled(out, replicas=1)
    device = neuron_host("trn2.3xlarge", devices=1)
    monkeypatch.setenv("NEURON_RT_ALLOW_LEGACY_NEFF", "TRUE")
    with caplog.at_level(logging.WARNING, logger="neuron_encoder.runtime"):
        model = load_compiled(out, replicas=1)
    assert "NEURON_RT_ALLOW_LEGACY_NEFF=TRUE lets the runtime" in caplog.text
    assert model(torch.ones(2, 16, dtype=torch.long)).shape == (2, 16, tiny_model.config.hidden_size)
    assert device.double.placements


def test_trn1_code_on_an_inf2_host_loads_with_a_warning(build_host, neuron_host, tiny_model, tmp_path, caplog):
    out = compile_tiny(tiny_model, tmp_path / "art", options=CompileOptions(target="trn1", auto_cast="none")).path
    neuron_host("inf2.xlarge", devices=1)
    with caplog.at_level(logging.WARNING, logger="neuron_encoder.runtime"):
        model = load_compiled(out, replicas=1)
    assert "compiled for trn1, and this host is inf2" in caplog.text
    assert model(torch.ones(2, 16, dtype=torch.long)).shape == (2, 16, tiny_model.config.hidden_size)


def test_lnc_on_trn2_is_recorded_and_must_match_the_runtime(build_host, neuron_host, tiny_model, tmp_path,
                                                            monkeypatch):
    result = compile_tiny(tiny_model, tmp_path / "art", options=CompileOptions(target="trn2", auto_cast="none",
                                                                                lnc=1))
    assert result.manifest["options"]["lnc"] == 1
    assert build_host.double.compilations[0].options["logical_nc_config"] == "1"
    device = neuron_host("trn2.48xlarge", devices=16)
    with pytest.raises(ArtifactError, match="LNC=1, but this process's runtime uses LNC=2.*"
                                            "NEURON_LOGICAL_NC_CONFIG=1"):
        load_compiled(result.path)
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "1")
    assert hardware.neuron_core_count() == 128
    assert load_compiled(result.path, replicas=2).placement == {"b2_s16": (0, 1)}
    assert device.double.visible_cores() == 128


def test_lnc_1_on_inf2_compiles_and_loads(build_host, neuron_host, tiny_model, tmp_path):
    result = compile_tiny(tiny_model, tmp_path / "art", options=CompileOptions(target="inf2", auto_cast="none",
                                                                                lnc=1))
    assert build_host.double.compilations[0].options["logical_nc_config"] == "1"
    neuron_host("inf2.xlarge", devices=1)
    assert load_compiled(result.path, replicas=1).placement == {"b2_s16": (0,)}


def test_lnc_on_inf2_is_refused_before_compiling(build_host, tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="--lnc 2 is for trn2 only"):
        compile_tiny(tiny_model, tmp_path / "art", options=CompileOptions(target="inf2", auto_cast="none", lnc=2))
    assert not build_host.double.calls_to("trace") and not (tmp_path / "art").exists()


def test_sdk_versions_are_compared_at_load(build_host, neuron_host, tiny_model, tmp_path, caplog):
    out = compile_tiny(tiny_model, tmp_path / "art").path
    neuron_host("inf2.xlarge", devices=1)
    manifest_path = out / artifact.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["versions"]["neuronx-cc"] = "2.26.6360.0"  # Neuron 2.31's compiler: same major
    manifest_path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="neuron_encoder.runtime"):
        load_compiled(out, replicas=1).close()
    assert "compiled with neuronx-cc 2.26.6360.0, this host has 2.27.5334.0: recompile" in caplog.text
    manifest["versions"]["neuronx-cc"] = "1.19.2.0"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="neuronx-cc 1.19.2.0, and this host has 2.27.5334.0.*major version"):
        load_compiled(out, replicas=1)


def test_compiler_failure_is_a_compile_error_naming_the_kept_log(build_host, tiny_model, tmp_path):
    with pytest.raises(CompileError, match="neuronx-cc failed.*its log and work files are in") as caught:
        compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="neuron", out=tmp_path / "art",
                      options=CompileOptions(target="inf2", extra_args=("--no-such-flag",)))
    assert not (tmp_path / "art").exists()
    workdir = Path(str(caught.value).rsplit(" in ", 1)[1])
    try:
        assert "unrecognized arguments: --no-such-flag" in (workdir / "log-neuron-cc.txt").read_text()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_device_tests_exist_are_marked_and_say_why_they_skip():
    """tests/test_neuron_device.py runs these paths on the real SDK; here it is collected and skipped."""
    from tests import test_neuron_device as device
    assert any(mark.name == "neuron" for mark in device.pytestmark)
    assert len([name for name in dir(device) if name.startswith("test_")]) >= 6
    if hardware.neuron_sdk_problem() or not hardware.has_neuron_devices():
        assert device.REASON and device.REASON.startswith("needs")
