"""The Neuron path on the real SDK and devices (marker `neuron`): what tests/test_backend_neuron.py shows
against the TEST DOUBLE, on an inf2, trn1 or trn2 instance. Elsewhere every test is skipped, with the
reason; with NEURON_ENCODER_REQUIRE_DEVICE=1 (scripts/neuron-check.sh sets it) a missing SDK or device
is an error instead, so a first run on hardware cannot pass by skipping.

    bash scripts/neuron-check.sh                      # on the instance: set up, these tests, the benchmark
    python -m pytest -m neuron tests/test_neuron_device.py -rs
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest
import torch

from neuron_encoder import Encoder, artifact, hardware, load_compiled, preset
from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import ArtifactError
from neuron_encoder.numerics import compare_outputs, sample_inputs


def _why_not_here() -> str | None:
    problem = hardware.neuron_sdk_problem()
    if problem:
        return f"needs the Neuron SDK (torch-neuronx with trace()): {problem}"
    if hasattr(sys.modules["torch_neuronx"], "double"):
        return "torch_neuronx is the TEST DOUBLE here, not the SDK"
    if not hardware.has_neuron_devices():
        return "needs Neuron devices (/dev/neuron*): run on an inf2/trn1/trn2 instance"
    return None


REASON = _why_not_here()
if REASON and os.environ.get("NEURON_ENCODER_REQUIRE_DEVICE") == "1":
    pytest.fail(f"NEURON_ENCODER_REQUIRE_DEVICE=1 but {REASON}", pytrace=False)
pytestmark = [pytest.mark.neuron, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

BATCH, SEQ = 2, 16
OTHER_GENERATION = {"inf2": "trn2", "trn1": "trn2", "trn1n": "trn2", "trn2": "inf2"}


@pytest.fixture(scope="module")
def model() -> Encoder:
    torch.manual_seed(0)
    return Encoder(preset("tiny")).eval()


@pytest.fixture(scope="module")
def on_device(model, tmp_path_factory) -> Path:
    """A small bucket compiled on this device (the target inferred from the instance) and gated there."""
    result = compile_model(model, batch_sizes=str(BATCH), seq_lens=str(SEQ), backend="neuron",
                           options=CompileOptions(auto_cast="none"), out=tmp_path_factory.mktemp("on") / "art")
    return result.path


def cross_compile(model, out: Path, target: str, monkeypatch) -> Path:
    """Compile as a build host would (cpu_backend=True: the probes say no devices), for `target`."""
    with monkeypatch.context() as patch:
        patch.setattr(hardware, "has_neuron_devices", lambda: False)
        result = compile_model(model, batch_sizes=str(BATCH), seq_lens=str(SEQ), backend="neuron",
                               options=CompileOptions(target=target, auto_cast="none"), out=out)
    return result.path


def check_outputs(compiled, model, seed: int) -> None:
    ids, mask, types = sample_inputs(model.config, BATCH, SEQ, seed=seed)
    with torch.no_grad():
        assert compare_outputs(compiled(ids, mask, types), model(ids, mask, types), mask)["max_abs"] < 1e-3


def test_our_core_count_is_the_runtimes():
    """Our count follows the documented rules; the runtime's own count (an AWS sample's call) is the truth."""
    import torch_neuronx  # noqa: F401 - registers torch.classes.neuron
    assert hardware.neuron_core_count() == torch.classes.neuron.Runtime().get_visible_nc_count()


def test_a_small_bucket_compiles_on_the_device_and_is_verified(on_device):
    manifest = artifact.read_manifest(on_device)
    (bucket,) = manifest["buckets"]
    assert bucket["numerics"]["verified"] and bucket["numerics"]["passed"]
    assert manifest["target"] == hardware.neuron_family()
    assert manifest["versions"]["torch-neuronx"] and manifest["versions"]["neuronx-cc"]
    assert (on_device / artifact.LOGS / bucket["name"] / "log-neuron-cc.txt").is_file()
    assert not [p for p in on_device.rglob("*") if p.suffix in (".npy", ".neff", ".hlo")]


def test_it_runs_on_every_visible_core(on_device, model):
    cores = hardware.neuron_core_count()
    with load_compiled(on_device) as compiled:
        assert compiled.placement == {f"b{BATCH}_s{SEQ}": tuple(range(cores))}
        errors: list[BaseException] = []

        def work(seed: int) -> None:
            try:
                check_outputs(compiled, model, seed)
            except BaseException as error:  # noqa: BLE001 - reported below, in the test's thread
                errors.append(error)
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(2 * cores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors


def test_each_core_can_hold_its_own_replica(on_device, model):
    """The server's hook: replica i loads with replicas=1, start_core=i."""
    replicas = [load_compiled(on_device, replicas=1, start_core=i) for i in range(hardware.neuron_core_count())]
    try:
        for i, replica in enumerate(replicas):
            assert replica.placement == {f"b{BATCH}_s{SEQ}": (i,)}
            check_outputs(replica, model, seed=i)
    finally:
        for replica in replicas:
            replica.close()


def test_a_cross_compiled_artifact_is_verified_on_first_load(model, tmp_path, monkeypatch):
    out = cross_compile(model, tmp_path / "art", hardware.neuron_family(), monkeypatch)
    assert artifact.read_manifest(out)["buckets"][0]["numerics"]["verified"] is False
    with load_compiled(out, replicas=1) as compiled:
        check_outputs(compiled, model, seed=7)
    numerics = json.loads((out / artifact.MANIFEST).read_text())["buckets"][0]["numerics"]
    assert numerics["verified"] and numerics["passed"]


def test_an_artifact_for_the_other_neuroncore_generation_is_refused(model, tmp_path, monkeypatch):
    host = hardware.neuron_family()
    other = OTHER_GENERATION[host]
    out = cross_compile(model, tmp_path / "art", other, monkeypatch)
    with pytest.raises(ArtifactError, match=f"compiled for {other}.*this host is {host}"):
        load_compiled(out)
