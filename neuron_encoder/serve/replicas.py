"""The model room of the server: one threads.ModelThread per replica, which loads (or first compiles,
through the cache) its own copy of the artifact, warms up every bucket, and then runs every torch
call the server makes. Nothing here parses JSON or knows about queues.

Replicas: one per NeuronCore on Neuron (each loads one copy with load_compiled(dir, replicas=1,
start_core=i)), one per GPU on CUDA (the thread's current device), one on
the CPU with every core (the thread rule, threads.py).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from neuron_encoder import artifact, hardware
from neuron_encoder.errors import ConfigError
from neuron_encoder.runtime import CompiledEncoder, load_compiled
from neuron_encoder.serve.settings import ServeSettings
from neuron_encoder.threads import ModelThread, plan_threads

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


def plan_replicas(backend: str, requested: int | None = None) -> ReplicaPlan:
    """One replica per NeuronCore or GPU, one on the CPU; `requested` overrides (on the CPU several
    replicas split the cores, threads.plan_threads)."""
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
    return ReplicaPlan(backend, count, plan_threads(count).threads_per_worker)


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
    """Pooled, unnormalised vectors (N, H) float32 of token-id rows, as the artifact plans them."""
    return model.embed_rows(rows, normalize=False).float().numpy()  # normalised per request


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
