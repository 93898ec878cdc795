"""Several server processes (serve/workers.py): the plan of what each worker owns (NeuronCores, CPU
threads), and real supervisors on loopback: the kernel spreads connections over the workers, /metrics
adds every worker up, SIGTERM drains them all, a worker that dies is restarted and said so, and on a
simulated inf2.24xlarge (tests/neuron_double.py) each worker owns its own contiguous NeuronCores."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import httpx
import pytest

from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import ConfigError
from neuron_encoder.serve.replicas import CPU_AUTO_WORKERS, Worker, plan_workers
from neuron_encoder.serve.settings import parse_workers
from neuron_encoder.serve.workers import worker_environment

from .serve_doubles import GATE_ID, NEURON_HOST_VARIABLE
from .serve_helpers import ServerProcess


def test_cpu_workers_share_the_threads_without_oversubscribing():
    assert plan_workers("cpu", budget=2) == [Worker(0, (), 1), Worker(1, (), 1)]
    assert [w.threads for w in plan_workers("cpu", budget=32)] == [4] * CPU_AUTO_WORKERS
    assert plan_workers("cpu", 1, budget=4) == [Worker(0, (), 4)]
    assert len(plan_workers("cuda")) == 1
    assert parse_workers("auto") is None and parse_workers("3") == 3
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="--workers"):
            parse_workers(bad)


def test_neuron_workers_own_contiguous_disjoint_cores(neuron_host, monkeypatch):
    neuron_host("inf2.24xlarge", devices=6)
    plan = plan_workers("neuron", budget=96)
    assert [w.cores for w in plan] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)]  # one per device
    assert [w.visible_cores for w in plan] == ["0-1", "2-3", "4-5", "6-7", "8-9", "10-11"]
    assert all(w.threads == 16 for w in plan)
    assert [w.visible_cores for w in plan_workers("neuron", 5, budget=96)] == ["0-2", "3-5", "6-7", "8-9", "10-11"]
    with pytest.raises(ConfigError, match="--workers 13 is more than the 12 NeuronCores"):
        plan_workers("neuron", 13)
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "4-7")  # the supervisor was given part of the host
    assert [w.visible_cores for w in plan_workers("neuron", budget=8)] == ["4-5", "6-7"]


def test_each_worker_is_told_its_share_before_it_starts(tmp_path):
    cpu = worker_environment(Worker(1, (), 3), tmp_path, {"OMP_NUM_THREADS": "8", "PATH": "/bin"})
    assert cpu == {"PATH": "/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "OMP_NUM_THREADS": "3",
                   "RAYON_NUM_THREADS": "3"}
    neuron = worker_environment(Worker(2, (4, 5), 16), tmp_path, {"NEURON_RT_NUM_CORES": "12"})
    assert neuron["NEURON_RT_VISIBLE_CORES"] == "4-5" and "NEURON_RT_NUM_CORES" not in neuron


def pids_and_info(server: ServerProcess, wanted: int, tries: int = 300) -> dict[int, dict]:
    """/info of every worker, by worker index: each request on a new connection, which the kernel gives
    to one worker or another."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        response = httpx.get(f"{server.url}/info", timeout=30)
        if response.status_code == 200:  # a restarted worker answers 503 until it is warm
            seen[response.json()["worker"]] = response.json()
        if len(seen) == wanted:
            break
    return seen


def test_two_cpu_workers_serve_count_drain_and_restart(tiny_text_artifact, tmp_path):
    server = ServerProcess(tmp_path, artifact=str(tiny_text_artifact), workers=2).start()
    try:
        server.wait_ready()
        seen = pids_and_info(server, 2)
        assert sorted(seen) == [0, 1] and seen[0]["pid"] != seen[1]["pid"]
        assert seen[0]["workers"] == [{"worker": 0, "neuron_cores": None, "cpu_threads": 1},
                                      {"worker": 1, "neuron_cores": None, "cpu_threads": 1}]
        for _ in range(20):  # a new connection each: both workers answer some
            response = httpx.post(f"{server.url}/v1/embeddings", json={"input": "hello"}, timeout=30)
            assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 64
        assert server.metric("neuron_encoder_requests_total", 'route="/v1/embeddings",status="200"') == 20
        assert server.metric("neuron_encoder_batch_size_sum") == 20  # every worker's batches, added up
        assert 'neuron_encoder_replica_busy_fraction{replica="1.0"}' in httpx.get(f"{server.url}/metrics").text

        os.kill(seen[1]["pid"], signal.SIGKILL)  # a worker dies: it is restarted, and the log says so
        deadline = time.monotonic() + 120
        while (again := pids_and_info(server, 2, tries=50)).get(1, seen[1])["pid"] == seen[1]["pid"]:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.5)
        assert again[1]["workers"] == seen[1]["workers"]
        assert f"worker 1 (pid {seen[1]['pid']}, worker 1 on CPU, 1 CPU thread(s)) exited with -9; restarting" \
            in server.output()
        assert httpx.post(f"{server.url}/embed", json={"inputs": "again"}, timeout=30).status_code == 200

        server.terminate()
        assert server.process.wait(60) == 0
        output = server.output()
        assert "worker 0: SIGTERM: draining" in output and "worker 1: SIGTERM: draining" in output
    finally:
        server.stop()


def test_sigterm_drains_every_worker(tiny_text_artifact, tmp_path):
    """Requests held at the gate in both workers (eight connections, which the kernel spreads): SIGTERM,
    then every worker refuses new requests, answers every accepted one once the gate opens, and exits."""
    server = ServerProcess(tmp_path, gate=True, artifact=str(tiny_text_artifact), workers=2, graceful_timeout=60)
    server.start().wait_ready()
    post = lambda body: httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=120)  # a new connection each
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        server.gate.close()
        held = [pool.submit(post, {"input": [[101, GATE_ID, 102]]}) for _ in range(8)]
        server.gate.wait_until_holding()
        time.sleep(0.5)  # the other held requests reach their worker's queue
        server.terminate()
        deadline = time.monotonic() + 30
        while server.output().count(": SIGTERM: draining") < 2:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        refused = post({"input": "too late"})
        server.gate.open()
        results = [future.result() for future in held]
    assert refused.status_code == 503 and refused.json()["error_type"] == "Unhealthy"
    assert [r.status_code for r in results] == [200] * 8
    assert server.process.wait(60) == 0, server.output()


def test_auto_on_inf2_24xlarge_gives_each_worker_its_own_cores(neuron_host, tiny_model, tmp_path):
    neuron_host("inf2.24xlarge", devices=6)
    out = compile_model(tiny_model, batch_sizes="1", seq_lens="16", backend="neuron",
                        options=CompileOptions(target="inf2", auto_cast="none"), out=tmp_path / "art").path
    server = ServerProcess(tmp_path, env={NEURON_HOST_VARIABLE: "inf2.24xlarge:6"}, artifact=str(out),
                           workers=None).start()
    try:
        server.wait_ready()
        seen = pids_and_info(server, 6)
        assert sorted(seen) == list(range(6)), server.output()
        for index, info in seen.items():
            assert [w["neuron_cores"] for w in info["workers"]] == ["0-1", "2-3", "4-5", "6-7", "8-9", "10-11"]
            assert info["backend"] == "neuron" and info["replicas"] == 2  # one per owned core
            assert info["placement"] == [f"replica 0: NeuronCore {2 * index}", f"replica 1: NeuronCore {2 * index + 1}"]
        response = httpx.post(f"{server.url}/v1/embeddings", json={"input": [[101, 200, 102]]}, timeout=30)
        assert response.status_code == 200
    finally:
        assert server.stop() == 0
