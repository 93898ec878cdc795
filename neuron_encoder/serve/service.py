"""The service's life, and what every route shares: settings, the replicas, the batcher, the state
(loading, ready, draining, failed), the count of requests in progress, and what /info describes.

It starts listening at once; /ping and /health answer 503 while the replicas load (or compile) and
warm up every bucket, then 200. Draining (server.py starts it on SIGTERM) stops admissions, and every
request already accepted is answered.

One of several server processes (workers.py), it is told its Team: every worker of the plan (for /info),
its own index, and the run directory where each worker marks itself ready: at start, a worker answers
503 until every worker is warm, so a client that saw one 200 never meets a cold worker after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from neuron_encoder import __version__, artifact, hardware
from neuron_encoder.serve import errors
from neuron_encoder.serve.batcher import Batcher
from neuron_encoder.serve.infer import Inference
from neuron_encoder.serve.metrics import REFRESH_S, Metrics
from neuron_encoder.serve.packing import BucketTable
from neuron_encoder.serve.replicas import ArtifactSource, LoadedReplica, Replicas, Worker, plan_replicas, run_batch
from neuron_encoder.serve.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Team:
    """This process's place among several server processes (workers.py)."""

    index: int
    workers: tuple[Worker, ...]
    run_dir: Path  # ready-<index> files; the supervisor's private directory

    def mark_ready(self) -> None:
        (self.run_dir / f"ready-{self.index}").touch()

    def all_ready(self) -> bool:
        return all((self.run_dir / f"ready-{worker.index}").exists() for worker in self.workers)


class Service:
    """What the routes share: settings, the replicas, the batcher, the state (loading, ready,
    draining, failed) and the count of requests in progress."""

    def __init__(self, settings: ServeSettings, run: Callable = run_batch, team: Team | None = None) -> None:
        self.settings, self.team = settings, team
        self._team_ready = team is None
        self.source = ArtifactSource(settings)
        self.plan = plan_replicas(self.source.backend(), settings.replicas)
        self.run = run
        self.state = "loading"
        self.fatal: BaseException | None = None
        self.on_fatal: Callable[[], None] = lambda: None
        self.active = 0  # HTTP requests in progress (RequestMiddleware)
        self.idle = asyncio.Event()
        self.replicas: Replicas | None = None
        self.batcher: Batcher | None = None
        self.inference: Inference | None = None
        self.info: dict[str, Any] = {}
        self.started = time.time()
        self.metrics = Metrics(self.plan.count, lambda: self.batcher.queue_depth if self.batcher else 0,
                               lambda: self.batcher.in_flight if self.batcher else 0,
                               worker=team.index if team else None)
        self._loading: asyncio.Task | None = None
        self._refreshing: asyncio.Task | None = None

    async def start(self) -> None:
        """Start loading every replica (each on its own thread) and return: the server listens meanwhile."""
        log.info("loading %s", self.plan.describe())
        self.replicas = Replicas(self.source, self.plan)
        self._loading = asyncio.get_running_loop().create_task(self._become_ready())

    async def _become_ready(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loaded = await self._loaded()
            self._wire(loop, loaded)
        except Exception as exc:  # a load or compile failed: the server cannot serve, and exits
            self.state, self.fatal = "failed", exc
            log.error("the model could not be loaded: %s: %s", type(exc).__name__, exc)
            self.on_fatal()
            return
        self.state = "ready"
        log.info("ready: %s, buckets %s", self.plan.describe(), self.info["buckets"])
        if self.team is not None:
            self.team.mark_ready()
            self._refreshing = loop.create_task(self._refresh_metrics())

    async def _refresh_metrics(self) -> None:
        while True:
            self.metrics.refresh()
            await asyncio.sleep(REFRESH_S)

    async def _loaded(self) -> list[LoadedReplica]:
        """Every replica once built and warm (or the first build's error). Polled, not waited on in a
        thread: a SIGTERM during a long compile must not wait for that thread to return."""
        while True:
            try:
                return self.replicas.ready(timeout=0)
            except concurrent.futures.TimeoutError:
                await asyncio.sleep(0.05)

    def _wire(self, loop: asyncio.AbstractEventLoop, loaded: list[LoadedReplica]) -> None:
        model, s = loaded[0].model, self.settings
        table = BucketTable.build(model.shapes, s.max_batch_tokens, s.max_batch_requests)
        self.batcher = Batcher(table, self.metrics, lambda replica, rows: self.run(replica.model, rows),
                               max_inputs=s.max_concurrent_requests, delay_ms=s.max_batch_delay_ms,
                               timeout_ms=s.request_timeout_ms)
        self.inference = Inference(self.batcher, self.metrics, model.tokenizer, model.config.vocab_size,
                                   s.auto_truncate, model.task)
        self.info = describe(s, self.plan, loaded, table, self.team)
        self.batcher.start(loop, self.replicas.threads)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def check_ready(self) -> Inference:
        if self.state == "draining":
            raise errors.Draining("the server is shutting down")
        if self.state == "failed":
            raise errors.Unhealthy(f"the model failed to load ({type(self.fatal).__name__}); the server is stopping")
        if self.state != "ready" or not self._team_ready and not self._check_team():
            raise errors.Unhealthy("the model is loading; retry soon")
        return self.inference

    def _check_team(self) -> bool:
        """Every worker warm (once true, for good: a worker restarted later is one of several)."""
        self._team_ready = self.team.all_ready()
        return self._team_ready

    def begin_drain(self) -> None:
        """Stop admitting: /ping answers 503 and new requests 503; accepted ones run to the end."""
        if self.state == "ready":
            self.state = "draining"
            self.batcher.close_admission()
        if self.active == 0:
            self.idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in progress; False if `timeout` seconds passed first."""
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self) -> None:
        for task in (self._loading, self._refreshing):
            if task is not None and not task.done():
                task.cancel()
        if self.batcher is not None:
            self.batcher.stop()
        if self.inference is not None:
            self.inference.close()
        if self.replicas is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.replicas.close,
                                                             self.settings.graceful_timeout)


def replica_location(replica: LoadedReplica, plan) -> str:
    """Where a replica runs, as the runtime reports it (the NeuronCores its buckets hold, numbered as the
    host numbers them: the runtime counts from the first of NEURON_RT_VISIBLE_CORES)."""
    if plan.backend == "neuron":
        visible = os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip()
        first = hardware.parse_core_list(visible)[0] if visible else 0
        cores = sorted({first + core for held in replica.model.placement.values() for core in held})
        return "NeuronCore " + ",".join(map(str, cores))
    if plan.backend == "cuda":
        return f"cuda:{replica.index}"
    return f"CPU, {plan.intra_op_threads} thread(s)"


def _solo(plan) -> Worker:
    """The one server process, as a plan entry: every visible NeuronCore, every CPU thread its replicas use."""
    cores = ()
    if plan.backend == "neuron":
        visible = os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip()
        first = hardware.parse_core_list(visible)[0] if visible else 0
        cores = tuple(range(first, first + hardware.neuron_core_count()))
    return Worker(0, cores, plan.intra_op_threads * plan.count)


def model_type(model) -> dict[str, Any]:
    """TEI's /info model_type: {"embedding": {"pooling"}}, or {"classifier" | "reranker": {"id2label", "label2id"}}."""
    task = model.task
    if task.kind == "embedding":
        return {"embedding": {"pooling": model.config.pooling}}
    return {task.kind: {"id2label": {str(i): label for i, label in enumerate(task.id2label)},
                        "label2id": task.label2id}}


def describe(settings: ServeSettings, plan, loaded: list[LoadedReplica], table: BucketTable,
             team: Team | None = None) -> dict[str, Any]:
    """GET /info: the model, the backend, the buckets, the workers, this worker's replicas, every limit."""
    import torch
    model = loaded[0].model
    manifest = model.manifest
    return {
        "model_id": manifest["model"]["id"], "model_dtype": manifest["precision"],
        "model_type": model_type(model), "hidden_size": model.config.hidden_size,
        "normalize_by_default": True, "tokenizer": model.tokenizer is not None,
        "backend": manifest["backend"], "target": manifest.get("target"), "artifact": str(model.directory),
        "artifact_sha256": artifact.manifest_hash(model.directory),
        "buckets": [list(bucket) for bucket in sorted(model.buckets)],
        "replicas": plan.count, "replica_plan": plan.describe(),
        "placement": [f"replica {r.index}: " + replica_location(r, plan) for r in loaded],
        "worker": team.index if team else 0, "pid": os.getpid(),
        "workers": [w.describe() for w in (team.workers if team else [_solo(plan)])],
        "warm_up_ms": {f"b{b}_s{s}": round(ms, 3) for (b, s), ms in sorted(loaded[0].warm_ms.items())},
        "bucket_cost_ms": {f"b{b}_s{s}": round(ms, 3) for (b, s), ms in sorted(model.shapes.costs.items())},
        "max_input_length": table.max_length, "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_requests": table.max_rows, "max_client_batch_size": settings.max_client_batch_size,
        "max_concurrent_requests": settings.max_concurrent_requests, "auto_truncate": settings.auto_truncate,
        "max_batch_delay_ms": settings.max_batch_delay_ms, "request_timeout_ms": settings.request_timeout_ms,
        "payload_limit": settings.payload_limit, "version": __version__,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     **{k: v for k, v in manifest.get("versions", {}).items() if k not in ("python", "torch")}},
        "host": {"cpu": hardware.cpu_model(), "instance_type": hardware.ec2_instance_type()},
    }
