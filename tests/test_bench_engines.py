"""Which engines a benchmark builds on which host, and that each one runs. Neuron runs on the
torch_neuronx TEST DOUBLE (tests/neuron_double.py) with the device probes patched."""

from __future__ import annotations

import threading

import pytest
import torch

from neuron_encoder import artifact, hardware
from neuron_encoder.bench import peers
from neuron_encoder.bench.accuracy import accuracy, make_reference
from neuron_encoder.bench.engines import Engine, LazyEngine, eager_engine, plan_engines, resolve_engines
from neuron_encoder.bench.workload import synthetic_workload
from neuron_encoder.errors import ArtifactError, BackendUnavailable, ConfigError
from neuron_encoder.models import load_model


@pytest.fixture
def no_peers(monkeypatch):
    """A host without ONNX Runtime and OpenVINO, whatever this one has."""
    monkeypatch.setattr(peers, "missing", lambda runtime: f"{runtime} not installed: {peers.INSTALL_HINT}")


@pytest.fixture
def with_peers(monkeypatch):
    """A host with both peers installed, where OpenVINO computes in bf16 by default."""
    monkeypatch.setattr(peers, "missing", lambda runtime: None)
    monkeypatch.setattr(peers, "openvino_default_precision", lambda: "bf16")


@pytest.fixture
def cpu_only_host(monkeypatch, cpu_host, no_peers):
    cpu_host("avx2")  # no native bf16, and the auto policy decides by that
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: False)
    monkeypatch.setattr(hardware, "neuron_device_count", lambda: 0)
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: "torch_neuronx is not installed")


@pytest.fixture
def tiny(tiny_model):
    return load_model(tiny_model)


def test_auto_on_a_cpu_host(cpu_only_host):
    messages: list[str] = []
    assert resolve_engines(["auto"], progress=messages.append) == ["cpu-eager", "cpu-artifact-fp32"]
    assert any(m.startswith("auto: skipping neuron") for m in messages)
    assert any(m.startswith("auto: skipping cuda") for m in messages)


def test_the_cpu_family_adds_bf16_where_the_policy_picks_it(cpu_only_host, cpu_host, monkeypatch):
    assert resolve_engines("cpu") == ["cpu-eager", "cpu-artifact-fp32"]
    cpu_host("avx512f", "amx_bf16", "amx_tile")
    assert resolve_engines("cpu") == ["cpu-eager", "cpu-artifact-fp32", "cpu-artifact-bf16"]
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, "fp32")  # exact fp32 on an AMX host
    assert resolve_engines("cpu") == ["cpu-eager", "cpu-artifact-fp32"]
    cpu_host("avx2")
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, "bf16")  # bf16 where the flags do not show it
    assert resolve_engines("cpu") == ["cpu-eager", "cpu-artifact-fp32", "cpu-artifact-bf16"]


def test_names_and_families(cpu_only_host):
    assert resolve_engines("cpu-artifact-bf16, cpu-eager") == ["cpu-eager", "cpu-artifact-bf16"]
    assert resolve_engines(["cpu", "cpu-eager"]) == ["cpu-eager", "cpu-artifact-fp32"]


def test_auto_on_an_inf2_host(inf2_host, no_peers):
    assert resolve_engines("auto") == ["cpu-eager", "cpu-artifact-fp32", "neuron-1core", "neuron-all-cores"]


def test_the_cpu_family_races_the_peers_where_they_are_installed(cpu_only_host, with_peers, monkeypatch):
    """auto and cpu add ONNX Runtime (fp32) and OpenVINO at fp32 and at its default here: the CPU's best."""
    peer_kinds = ["cpu-onnxruntime-fp32", "cpu-openvino-fp32", "cpu-openvino-bf16"]
    assert resolve_engines("auto") == ["cpu-eager", "cpu-artifact-fp32", *peer_kinds]
    assert resolve_engines("cpu-openvino,cpu-onnxruntime") == peer_kinds
    assert resolve_engines(["cpu-openvino,cpu-onnxruntime"]) == peer_kinds  # as run_bench passes the CLI's text
    assert resolve_engines("cpu-openvino-fp32") == ["cpu-openvino-fp32"]
    monkeypatch.setattr(peers, "openvino_default_precision", lambda: "fp32")  # a CPU without native bf16
    assert resolve_engines("cpu-openvino") == ["cpu-openvino-fp32"]


def test_a_peer_that_is_not_installed_names_the_extra(cpu_only_host):
    assert resolve_engines("auto") == ["cpu-eager", "cpu-artifact-fp32"]  # skipped, not an error
    for name in ("cpu-openvino", "cpu-onnxruntime-fp32"):
        with pytest.raises(BackendUnavailable, match=r"not installed: pip install 'neuron-encoder\[cpu-peers\]'"):
            resolve_engines(name)


@pytest.mark.skipif(bool(peers.missing("onnxruntime") or peers.missing("openvino")),
                    reason="needs onnxruntime and openvino: pip install 'neuron-encoder[cpu-peers]'")
def test_peer_engines_run_one_export_of_the_same_weights(tiny, tiny_model, tiny_config, monkeypatch):
    exports: list = []
    export = peers.export_onnx
    monkeypatch.setattr(peers, "export_onnx", lambda *args: exports.append(args) or export(*args))
    default = peers.openvino_default_precision()
    kinds = ["cpu-onnxruntime-fp32", "cpu-openvino-fp32"] + ([f"cpu-openvino-{default}"] if default != "fp32" else [])
    plans = plan_engines(tiny, kinds, [2], [16])
    assert all(isinstance(p, LazyEngine) for p in plans) and exports == []  # nothing exported until built
    sample = synthetic_workload(tiny_config, 3, 16).batches[0]
    reference = make_reference(tiny_model, sample)
    for plan in plans:
        engine = plan.build()
        assert (engine.name, engine.precision, engine.device) == (plan.name, plan.name.rsplit("-", 1)[1], "cpu")
        assert engine.thread_plan(2) is None  # its own thread pool: torch's split does not apply
        assert accuracy(engine.run, reference) > (0.9999 if engine.precision == "fp32" else 0.999)
        outputs: list = []
        thread = threading.Thread(target=lambda: outputs.append(engine.run(*sample.as_tuple())))
        thread.start()
        thread.join()
        assert outputs[0].shape == (3, 16, tiny_config.hidden_size) and outputs[0].dtype == torch.float32
    assert len(exports) == 1  # one export, shared


def test_unknown_engine_is_a_config_error(cpu_only_host):
    with pytest.raises(ConfigError, match="unknown engine 'tpu'; choose from auto, all, cpu, cuda, neuron, cpu-onnxruntime, cpu-openvino, cpu-eager"):
        resolve_engines(["cpu", "tpu"])


@pytest.mark.parametrize("names", [[], "", " , "])
def test_no_engine_is_a_config_error(names):
    with pytest.raises(ConfigError, match="no engines"):
        resolve_engines(names)


def test_neuron_without_the_sdk_gives_the_install_hint(cpu_only_host):
    with pytest.raises(BackendUnavailable, match="torch_neuronx is not installed") as info:
        resolve_engines("neuron")
    assert hardware.NEURON_INSTALL_HINT in str(info.value)
    with pytest.raises(BackendUnavailable, match="pip.repos.neuron.amazonaws.com"):
        resolve_engines("neuron-1core")


def test_neuron_sdk_without_devices_says_so(monkeypatch, cpu_only_host):
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: None)
    with pytest.raises(BackendUnavailable, match="no Neuron devices"):
        resolve_engines("neuron")


def test_cuda_without_a_gpu(cpu_only_host):
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        resolve_engines("cuda-eager-fp16")


def test_eager_engine_runs_from_any_thread(tiny_model, tiny_config):
    engine = eager_engine(tiny_model)
    assert (engine.name, engine.precision, engine.device, engine.artifact_sha256) == ("cpu-eager", "fp32", "cpu", None)
    batch = synthetic_workload(tiny_config, 2, 16).batches[0]
    outputs = []
    thread = threading.Thread(target=lambda: outputs.append(engine.run(*batch.as_tuple())))
    thread.start()
    thread.join()
    assert outputs[0].shape == (2, 16, tiny_config.hidden_size)
    assert not outputs[0].requires_grad


def test_cpu_engines_compile_lazily_into_the_artifact_dir(tiny, tiny_model, tiny_config, tmp_path):
    messages: list[str] = []
    plans = plan_engines(tiny, ["cpu-eager", "cpu-artifact-fp32"], [1, 2], [16], artifacts_dir=tmp_path,
                         progress=messages.append)
    assert isinstance(plans[0], Engine) and isinstance(plans[1], LazyEngine)
    assert [p.name for p in plans] == ["cpu-eager", "cpu-artifact-fp32"]
    assert list(tmp_path.iterdir()) == []  # nothing compiled until the sweep reaches it
    engine = plans[1].build()
    (directory,) = tmp_path.iterdir()
    assert engine.artifact_sha256 == artifact.manifest_hash(directory)
    assert (engine.name, engine.precision, engine.device) == ("cpu-artifact-fp32", "fp32", "cpu")
    assert any(m.startswith("compile cpu-artifact-fp32: ") for m in messages)
    sample = synthetic_workload(tiny_config, 3, 16).batches[0]  # batch 3: the runtime splits it over buckets
    assert accuracy(engine.run, make_reference(tiny_model, sample)) > 0.9999

    again = plan_engines(tiny, ["cpu-artifact-fp32"], [1, 2], [16], artifacts_dir=tmp_path,
                         progress=messages.append)[0].build()
    assert again.artifact_sha256 == engine.artifact_sha256
    assert any("cache hit" in m for m in messages)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.run(*sample.as_tuple())


def test_a_tampered_cached_artifact_is_reported_not_recompiled(tiny, tmp_path):
    """The compile cache checks every file: tampering is an error, never papered over by a recompile."""
    plan_engines(tiny, ["cpu-artifact-fp32"], [1], [16], artifacts_dir=tmp_path)[0].build().close()
    (directory,) = tmp_path.iterdir()
    bucket = directory / "model.json"  # the CPU artifact's one program
    bucket.write_bytes(bucket.read_bytes() + b"tampered")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        plan_engines(tiny, ["cpu-artifact-fp32"], [1], [16], artifacts_dir=tmp_path)[0].build()
    assert bucket.read_bytes().endswith(b"tampered")  # left as found, for the user to look at


def test_a_given_artifact_replaces_compiling_it(tiny, tmp_path):
    first = plan_engines(tiny, ["cpu-artifact-fp32"], [1], [16], artifacts_dir=tmp_path)[0].build()
    (directory,) = tmp_path.iterdir()
    plans = plan_engines(tiny, ["cpu-eager", "cpu-artifact-fp32"], [1], [16], artifacts=[directory],
                         artifacts_dir=tmp_path / "unused")
    assert [p.name for p in plans] == ["cpu-eager", "cpu-artifact-fp32"]
    assert plans[1].build().artifact_sha256 == first.artifact_sha256
    assert not (tmp_path / "unused").exists()


def test_an_artifact_of_other_weights_is_refused(tiny, tiny_config, tmp_path):
    plan_engines(tiny, ["cpu-artifact-fp32"], [1], [16], artifacts_dir=tmp_path)[0].build()
    (directory,) = tmp_path.iterdir()
    torch.manual_seed(1)
    from neuron_encoder import Encoder
    other = load_model(Encoder(tiny_config).eval())
    with pytest.raises(ConfigError, match="compiled from other weights"):
        plan_engines(other, [], [1], [16], artifacts=[directory])


def test_unknown_kind_and_empty_plan(tiny):
    with pytest.raises(ConfigError, match="unknown engine 'gpu'"):
        plan_engines(tiny, ["gpu"], [1], [16])
    with pytest.raises(ConfigError, match="nothing to benchmark"):
        plan_engines(tiny, [], [1], [16])


def test_neuron_on_one_core_and_on_all_cores(inf2_host, tiny, tiny_model, tiny_config, tmp_path):
    plans = plan_engines(tiny, resolve_engines("neuron"), [1, 2], [16], artifacts_dir=tmp_path)
    assert [p.name for p in plans] == ["neuron-1core", "neuron-all-cores"]
    one, every = plans[0].build(), plans[1].build()
    assert len(list(tmp_path.iterdir())) == 1  # compiled once, loaded twice
    assert (one.cores, every.cores) == (1, 2) and one.device == "neuron"
    assert one.precision == every.precision == "bf16-matmult"  # as AWS's published numbers
    compilation = inf2_host.double.compilations[-1]
    assert compilation.options["auto_cast"] == "matmult" and compilation.target == "inf2"
    assert compilation.options["disable_mixed_precision_accumulation"]  # as AWS measured before Neuron 2.27
    manifest = artifact.read_manifest(next(tmp_path.iterdir()))
    assert "--disable-mixed-precision-accumulation" in manifest["compiler_args"]
    sample = synthetic_workload(tiny_config, 2, 16).batches[0]
    reference = make_reference(tiny_model, sample)
    for engine in (one, every):
        output = engine.run(*sample.as_tuple())
        assert output.device.type == "cpu" and output.shape == (2, 16, tiny_config.hidden_size)
        assert accuracy(engine.run, reference) > 0.99  # bf16 matmuls: close, not equal
        assert engine.thread_plan(4) is None  # off the CPU: the thread rule leaves torch alone


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("kind", ["cuda-eager-fp32", "cuda-eager-fp16"])
def test_cuda_eager_engines_return_host_tensors_close_to_fp32(tiny_model, tiny_config, kind):
    engine = eager_engine(tiny_model, kind)
    sample = synthetic_workload(tiny_config, 2, 16).batches[0]
    output = engine.run(*sample.as_tuple())
    assert output.device.type == "cpu" and output.dtype == torch.float32
    assert accuracy(engine.run, make_reference(tiny_model, sample)) > 0.99


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_the_cuda_family_compiles_a_gated_artifact(tiny, tiny_model, tiny_config, tmp_path):
    kinds = resolve_engines("cuda")
    assert "cuda-artifact-fp16" in kinds
    (plan,) = plan_engines(tiny, ["cuda-artifact-fp16"], [2], [16], artifacts_dir=tmp_path)
    engine = plan.build()
    (directory,) = tmp_path.iterdir()
    manifest = artifact.read_manifest(directory)
    assert manifest["backend"] == "cuda" and manifest["buckets"][0]["numerics"]["verified"]
    sample = synthetic_workload(tiny_config, 2, 16).batches[0]
    assert accuracy(engine.run, make_reference(tiny_model, sample)) > 0.99
