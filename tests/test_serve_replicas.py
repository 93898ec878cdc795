"""The model room: replica plans, loading (or compiling once) on each replica's own thread, warm-up of
every bucket, the batch call, and the Neuron path (one replica per core) through tests/neuron_double.py."""

from __future__ import annotations

import threading

import pytest
import torch

from neuron_encoder import hardware, load_compiled
from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import ConfigError
from neuron_encoder.model import pool
from neuron_encoder.serve.replicas import ArtifactSource, Replicas, plan_replicas, run_batch
from neuron_encoder.serve.settings import ServeSettings
from neuron_encoder.threads import cpu_budget



def test_replica_plans(monkeypatch):
    cpu = plan_replicas("cpu")
    assert (cpu.count, cpu.intra_op_threads) == (1, cpu_budget())  # one replica, every core
    assert plan_replicas("cpu", 2).intra_op_threads == max(1, cpu_budget() // 2)
    monkeypatch.setattr(hardware, "neuron_core_count", lambda: 2)
    assert plan_replicas("neuron").count == 2 and "one per NeuronCore" in plan_replicas("neuron").describe()
    with pytest.raises(ConfigError, match="--replicas 3 is more than the 2 neuron devices"):
        plan_replicas("neuron", 3)
    monkeypatch.setattr(hardware, "neuron_core_count", lambda: 0)
    with pytest.raises(ConfigError, match="no neuron devices visible"):
        plan_replicas("neuron")


def test_a_replica_loads_on_its_own_thread_and_warms_every_bucket(tiny_text_artifact):
    replicas = Replicas(ArtifactSource(ServeSettings(artifact=str(tiny_text_artifact))), plan_replicas("cpu"))
    try:
        (replica,) = replicas.ready()
        assert set(replica.warm_ms) == set(replica.model.buckets) and all(ms > 0 for ms in replica.warm_ms.values())
        rows = [[101, 2023, 2003, 102], [101, 7592, 102]]
        got = replicas.threads[0].submit(lambda r: run_batch(r.model, rows)).result()
        with load_compiled(tiny_text_artifact) as model:
            ids = torch.tensor([rows[0], rows[1] + [0]])
            mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
            expected = pool(model(ids, mask), mask, model.config.pooling, normalize=False)
        assert got.dtype.name == "float32" and torch.allclose(torch.from_numpy(got), expected, atol=1e-5)
        ran_on = replicas.threads[0].submit(lambda r: threading.get_ident()).result()
        assert ran_on == replicas.threads[0].ident != threading.get_ident()
    finally:
        replicas.close()


def test_a_model_is_compiled_once_for_every_replica(tmp_path):
    settings = ServeSettings(model="random:tiny", backend="cpu", batch_sizes="1", seq_lens="8",
                             artifacts_dir=str(tmp_path))
    replicas = Replicas(ArtifactSource(settings), plan_replicas("cpu", 2))
    try:
        loaded = replicas.ready()
        assert len(loaded) == 2 and loaded[0].model.directory == loaded[1].model.directory
        assert [p.name for p in tmp_path.iterdir()] == [loaded[0].model.directory.name]
    finally:
        replicas.close()


def test_on_neuron_each_replica_holds_its_own_core(inf2_host, tiny_model, tmp_path, tiny_config):
    out = compile_model(tiny_model, batch_sizes="1,2", seq_lens="8,16", backend="neuron",
                        options=CompileOptions(target="inf2", auto_cast="none"), out=tmp_path / "art").path
    plan = plan_replicas(ArtifactSource(ServeSettings(artifact=str(out))).backend())
    assert plan.count == 2
    replicas = Replicas(ArtifactSource(ServeSettings(artifact=str(out))), plan)
    try:
        loaded = replicas.ready()
        double = inf2_host.double
        for replica in loaded:
            assert len(replica.model.buckets) == 4
            for bucket in replica.model.buckets.values():
                (copy,) = bucket.copies  # load_compiled(dir, replicas=1): one copy per replica
                flags = dict(copy.named_buffers())["neuron_flags"]
                placement = double.placements[flags.data_ptr()]
                assert (placement.start_nc, placement.nc_count) == (replica.index, 1)
            assert set(replica.model.placement.values()) == {(replica.index,)}
        double.executions.clear()
        rows = [[5, 6, 7, 8, 9]]
        outputs = [thread.submit(lambda r: run_batch(r.model, rows)).result() for thread in replicas.threads]
        assert [e.core for e in double.executions] == [0, 1]  # replica 0 ran on core 0, replica 1 on core 1
        ids, mask = torch.tensor([rows[0] + [0] * 3]), torch.tensor([[1] * 5 + [0] * 3])
        with torch.no_grad():
            expected = pool(tiny_model(ids, mask, torch.zeros_like(ids)), mask, tiny_config.pooling, False)
        for got in outputs:
            assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4)
    finally:
        replicas.close()
