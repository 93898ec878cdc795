"""`neuron-encoder serve`: one server process, or several under a supervisor, the way production Python
servers scale past one event loop (one process holds one GIL and one loop, however many cores it has).

Each worker is `python -m neuron_encoder.serve.workers` with its own listening socket on the same port
(SO_REUSEPORT: the kernel spreads new connections over the workers), its own replicas, and what the plan
gives it (replicas.plan_workers): its NeuronCores through NEURON_RT_VISIBLE_CORES and its share of the CPU
threads through OMP_NUM_THREADS (and RAYON_NUM_THREADS, the tokenizer's pool), set in its environment
before it imports torch or starts a runtime. Its settings come on its stdin (they may hold the API key, which an environment would show).

The supervisor owns a private temporary directory: PROMETHEUS_MULTIPROC_DIR for the metrics of every
worker (metrics.py) and the ready marks (service.Team). SIGTERM or Ctrl-C: every worker drains
(server.py) and the supervisor exits 0 once all have; a second signal stops them at once. A worker that
dies after it was ready is restarted, and the log says so; one that dies before it was ever ready (a
model that cannot load) stops the server with its exit code, as a single process would.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from neuron_encoder.errors import ConfigError
from neuron_encoder.serve.replicas import ArtifactSource, Worker, plan_workers, run_batch
from neuron_encoder.serve.server import run_server
from neuron_encoder.serve.service import Team
from neuron_encoder.serve.settings import ServeSettings, resolve

log = logging.getLogger(__name__)

WORKER_MODULE = "neuron_encoder.serve.workers"
POLL_S = 0.2


def serve(settings: ServeSettings, api_key_file: str | None = None, run: Callable = run_batch,
          worker_module: str = WORKER_MODULE) -> None:
    """`neuron-encoder serve`: SageMaker's conventions and the API key's sources first (settings.resolve),
    then one server process, or --workers of them (auto: replicas.plan_workers). `run` is the replica's
    model call in a single process (tests inject faults); `worker_module` runs one worker (tests run
    theirs, with a test double installed, through worker_main)."""
    settings = resolve(settings, api_key_file=api_key_file)
    source = ArtifactSource(settings)
    plan = plan_workers(source.backend(), settings.workers)
    if len(plan) == 1:
        run_server(settings, run)
        return
    if settings.model and not settings.artifact:  # compile once, before any worker starts
        settings = settings.replace(artifact=str(source.path()), model=None)
    code = Supervisor(settings, plan, worker_module).run()
    if code:
        sys.exit(code)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket that shares its port with the other workers' (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program listens on: SO_REUSEPORT alone would share it with that program."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def worker_environment(worker: Worker, metrics_dir: Path, environ: dict | None = None) -> dict[str, str]:
    """A worker's environment: what it owns, read by torch, the tokenizer and the Neuron runtime when they
    start, and where its metrics go."""
    env = {**(os.environ if environ is None else environ), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "OMP_NUM_THREADS": str(worker.threads),  # torch's threads: its share (threads.py)
           "RAYON_NUM_THREADS": str(worker.threads)}  # the tokenizer's batch encode: the same share
    if worker.cores:
        env["NEURON_RT_VISIBLE_CORES"] = worker.visible_cores
        env.pop("NEURON_RT_NUM_CORES", None)  # VISIBLE_CORES says it all
    return env


class Supervisor:
    """Starts every worker of the plan, restarts one that dies, and forwards SIGTERM (module docstring)."""

    def __init__(self, settings: ServeSettings, plan: list[Worker], worker_module: str = WORKER_MODULE) -> None:
        self.settings, self.plan, self.module = settings, plan, worker_module
        self.processes: dict[int, subprocess.Popen] = {}
        self.stopping = 0  # signals received
        self.run_dir: Path | None = None

    def run(self) -> int:
        """Until every worker has exited after a signal (0) or one failed to start (its exit code)."""
        check_port_free(self.settings.host, self.settings.port)
        self.run_dir = Path(tempfile.mkdtemp(prefix="neuron-encoder-serve-"))
        (self.run_dir / "metrics").mkdir()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("serving on http://%s:%d with %d workers: %s%s", self.settings.host, self.settings.port,
                 len(self.plan), "; ".join(self._describe(w) for w in self.plan),
                 "; API key required" if self.settings.api_key else "")
        try:
            for worker in self.plan:
                self._start(worker)
            return self._watch()
        finally:
            for process in self.processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @staticmethod
    def _describe(worker: Worker) -> str:
        where = f"NeuronCores {worker.visible_cores}" if worker.cores else "CPU"
        return f"worker {worker.index} on {where}, {worker.threads} CPU thread(s)"

    def _start(self, worker: Worker) -> None:
        env = worker_environment(worker, self.run_dir / "metrics")
        process = subprocess.Popen([sys.executable, "-m", self.module], env=env, stdin=subprocess.PIPE,
                                   start_new_session=True)  # Ctrl-C reaches the supervisor, which forwards it
        team = Team(worker.index, tuple(self.plan), self.run_dir)
        process.stdin.write(pickle.dumps((self.settings, team, os.getpid())))
        process.stdin.close()
        self.processes[worker.index] = process

    def _on_signal(self, sig: int, frame) -> None:
        self.stopping += 1
        if self.stopping == 1:
            log.info("%s: every worker drains (up to %g s)", signal.Signals(sig).name, self.settings.graceful_timeout)
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the second one stops a worker at once

    def _watch(self) -> int:
        deadline = None
        while True:
            time.sleep(POLL_S)
            if self.stopping:
                deadline = deadline or time.monotonic() + self.settings.graceful_timeout + 10
                if all(p.poll() is not None for p in self.processes.values()):
                    return 0
                if time.monotonic() > deadline:
                    log.warning("workers still running past --graceful-timeout: stopping them")
                    return 0
                continue
            for worker in self.plan:
                code = self.processes[worker.index].poll()
                if code is None:
                    continue
                if not (self.run_dir / f"ready-{worker.index}").exists():
                    log.error("worker %d exited with %d before it was ready: stopping", worker.index, code)
                    self._on_signal(signal.SIGTERM, None)
                    return code or 1
                log.warning("worker %d (pid %d, %s) exited with %d; restarting it", worker.index,
                            self.processes[worker.index].pid, self._describe(worker), code)
                from prometheus_client import multiprocess
                multiprocess.mark_process_dead(self.processes[worker.index].pid, str(self.run_dir / "metrics"))
                (self.run_dir / f"ready-{worker.index}").unlink()
                self._start(worker)


def worker_main(run: Callable = run_batch) -> None:
    """One worker: its settings and Team from stdin, its own socket on the shared port, then the server
    (`run`: the replicas' model call; tests inject faults). It drains when the supervisor goes away
    without a word (killed)."""
    from neuron_encoder.errors import run_main
    settings, team, parent = pickle.loads(sys.stdin.buffer.read())
    logging.basicConfig(level=logging.INFO, format=f"worker {team.index}: %(message)s", stream=sys.stderr)

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="supervisor-watch", daemon=True).start()
    run_main(lambda: run_server(settings, run, team, sockets=[listen(settings.host, settings.port)]))


if __name__ == "__main__":
    worker_main()
