"""The model room of the server: one threads.ModelThread per replica, which loads (or first compiles,
through the cache) its own copy of the artifact, warms up every bucket, and then runs every torch
call the server makes. Nothing here parses JSON or knows about queues.

Replicas: one per NeuronCore on Neuron (each loads one copy with load_compiled(dir, replicas=1,
start_core=i)), one per GPU on CUDA (the thread's current device), one on
the CPU with every core (the thread rule, threads.py).

Several server processes (workers.py) split the host first: plan_workers gives each worker its own
contiguous NeuronCores (NEURON_RT_VISIBLE_CORES, set before its runtime starts) or its share of the CPU
threads, and each worker plans its replicas within what it was given.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from neuron_encoder import artifact, hardware, platforms
from neuron_encoder.errors import ConfigError
from neuron_encoder.runtime import CompiledEncoder, load_compiled
from neuron_encoder.serve.settings import ServeSettings
from neuron_encoder.threads import ModelThread, cpu_budget, plan_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaPlan:
    """How many replicas, on what, and the CPU threads each may use."""

    backend: str  # cpu | cuda | neuron
    count: int
    intra_op_threads: int

    def describe(self) -> str:
        where = {"neuron": "NeuronCore", "cuda": "GPU"}.get(self.backend)
        each = f"one per {where}" if where else f"{self.intra_op_threads} CPU thread(s) each"
        return f"{self.count} replica{'s' if self.count > 1 else ''} on {self.backend} ({each})"


def plan_replicas(backend: str, requested: int | None = None, budget: int | None = None) -> ReplicaPlan:
    """One replica per NeuronCore or GPU, one on the CPU; `requested` overrides (on the CPU several
    replicas split the cores, threads.plan_threads; `budget` is this process's CPU threads)."""
    if backend == "neuron":
        available = hardware.neuron_core_count()
    elif backend == "cuda":
        available = torch.cuda.device_count()
    else:
        available = None
    if available is not None and available < 1:
        raise ConfigError(f"no {backend} devices visible to this process to serve on")
    if requested is not None and available is not None and requested > available:
        raise ConfigError(f"--replicas {requested} is more than the {available} {backend} devices this "
                          "process sees (one replica per device)")
    count = requested or available or 1
    return ReplicaPlan(backend, count, plan_threads(count, budget).threads_per_worker)


CPU_AUTO_WORKERS = 8  # at most, one per core: each holds a model copy; past 8, cores go to intra-op threads


@dataclass(frozen=True)
class Worker:
    """One server process of the plan: the NeuronCores it owns (absolute, contiguous) or none, and the CPU
    intra-op threads its replicas share (its part of the thread rule's budget)."""

    index: int
    cores: tuple[int, ...]
    threads: int

    @property
    def visible_cores(self) -> str | None:
        """Its NEURON_RT_VISIBLE_CORES ('2-3'); None off Neuron."""
        if not self.cores:
            return None
        return f"{self.cores[0]}-{self.cores[-1]}" if len(self.cores) > 1 else str(self.cores[0])

    def describe(self) -> dict:
        return {"worker": self.index, "neuron_cores": self.visible_cores, "cpu_threads": self.threads}


def plan_workers(backend: str, requested: int | None = None, budget: int | None = None) -> list[Worker]:
    """The server processes (`serve --workers`; None is auto) and what each owns.

    Neuron: auto is one worker per device (NeuronCore group: the cores of one chip, which share its
    memory), each owning that device's contiguous cores; N splits the visible cores into N contiguous
    ranges. CPU: auto is one per core up to CPU_AUTO_WORKERS (measured on a 2-vCPU Xeon, near-zero
    model, 64 connections: two one-thread workers 4,650 requests/s, one one-thread process 3,650, one
    two-thread process 820, its OpenMP team spinning against its event loop). Every worker gets an equal share of the CPU threads
    (threads.plan_threads), so together they never oversubscribe the cores. CUDA: auto is one.
    """
    budget = budget or cpu_budget()
    if backend == "neuron":
        visible = os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip()
        total = hardware.neuron_core_count()
        first = hardware.parse_core_list(visible)[0] if visible else 0
        family = hardware.neuron_family()
        group = platforms.cores_per_device(family, hardware.logical_nc_config()) if family else total
        count = requested or max(1, total // max(1, group))
        if count > total:
            raise ConfigError(f"--workers {count} is more than the {total} NeuronCores this host shows: a worker "
                              "owns one NeuronCore at least")
        sizes = [total // count + (1 if i < total % count else 0) for i in range(count)]
        starts = [first + sum(sizes[:i]) for i in range(count)]
        share = plan_threads(count, budget).threads_per_worker
        return [Worker(i, tuple(range(start, start + size)), share) for i, (start, size) in enumerate(zip(starts, sizes))]
    count = requested or (min(budget, CPU_AUTO_WORKERS) if backend == "cpu" else 1)
    share = plan_threads(count, budget).threads_per_worker
    return [Worker(i, (), share) for i in range(count)]


class ArtifactSource:
    """The artifact every replica loads: the one given, or `model` compiled once, by whichever replica
    asks first (on its own thread), through compile_model's cache."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._path = Path(settings.artifact) if settings.artifact else None
        self._lock = threading.Lock()

    def backend(self) -> str:
        """The backend the replicas run on, known before any compile (the auto policy decides it)."""
        if self._path is not None:
            return artifact.read_manifest(self._path)["backend"]
        from neuron_encoder.backends import select_backend
        return select_backend(self.settings.backend, self.settings.compile_options)[0].name

    def path(self) -> Path:
        with self._lock:
            if self._path is None:
                from neuron_encoder.compiler import compile_model
                s = self.settings
                result = compile_model(s.model_spec, batch_sizes=s.batch_sizes, seq_lens=s.seq_lens,
                                       backend=s.backend, options=s.compile_options,
                                       artifacts_dir=s.artifacts_dir, progress=log.info)
                self._path = result.path
            return self._path


@dataclass
class LoadedReplica:
    """What a replica thread holds: its model, and what warming it up measured."""

    index: int
    model: CompiledEncoder
    warm_ms: dict[tuple[int, int], float]  # the fastest warm-up call of each bucket


def load_replica(source: ArtifactSource, index: int, backend: str) -> LoadedReplica:
    """Replica `index`'s own copy of the artifact, on its device, every bucket warmed up."""
    path = source.path()
    if backend == "cuda":
        torch.cuda.set_device(index)  # per thread: this replica's GPU for every later call
    model = load_compiled(path, replicas=1, start_core=index)  # on Neuron: one copy, on core `index`
    try:
        return LoadedReplica(index, model, model.warm_up())
    except BaseException:
        model.close()
        raise


def run_batch(model: CompiledEncoder, rows: Sequence[list[int]]) -> np.ndarray:
    """What the artifact's task computes, float32, of token-id rows as the artifact plans them: an
    embedder's pooled, unnormalised vectors (N, H) (normalised per request), a classifier's or reranker's
    logits (N, L) (scored per request)."""
    if model.task.kind != "embedding":
        return model.logits_rows(rows).float().numpy()
    return model.embed_rows(rows, normalize=False).float().numpy()


class Replicas:
    """The replica threads: each starts building at once; ready() waits for all of them."""

    def __init__(self, source: ArtifactSource, plan: ReplicaPlan) -> None:
        self.plan = plan
        self.threads = [ModelThread(lambda i=i: load_replica(source, i, plan.backend), name=f"replica-{i}",
                                    intra_op_threads=plan.intra_op_threads)
                        for i in range(plan.count)]

    def ready(self, timeout: float | None = None) -> list[LoadedReplica]:
        """Every replica, built and warm; the first failure's exception, or TimeoutError."""
        return [thread.ready(timeout) for thread in self.threads]

    def close(self, timeout: float | None = None) -> None:
        """Free each replica's devices on its own thread, then stop the threads."""
        for thread in self.threads:
            thread.submit(lambda replica: replica.model.close())
        for thread in self.threads:
            thread.close(timeout)
