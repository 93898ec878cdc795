"""A real server on loopback for the end-to-end tests: uvicorn in a subprocess on a free port,
started through tests/serve_doubles.py (the real server, with a fault-injecting model call)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180  # import, load and warm every bucket on a busy 2-core CI host
# One intra-op thread: test hosts run other work beside the server, and a two-thread OpenMP team on a
# shared 2-core host waits on descheduled helpers (10x slower tiny batches). Speed only, not behaviour.
SERVER_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gate:
    """Holds batches that carry serve_doubles.GATE_ID until opened (the file exists)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.open()

    def open(self) -> None:
        self.path.touch()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def wait_until_holding(self, timeout: float = 60) -> None:
        """Until a replica is waiting at the gate: from then on it computes nothing else."""
        deadline = time.monotonic() + timeout
        while not self.path.with_suffix(".waiting").exists():
            assert time.monotonic() < deadline, "no batch reached the gate"
            time.sleep(0.005)


class ServerProcess:
    """`python -m tests.serve_doubles SETTINGS GATE` with its output in a log file."""

    def __init__(self, directory: Path, gate: bool = False, env: dict[str, str] | None = None, **settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / f"server-{self.port}.log"
        self.gate = Gate(directory / f"gate-{self.port}") if gate else None
        self.settings = {"port": self.port, **settings}
        self.headers = {"Authorization": f"Bearer {settings['api_key']}"} if settings.get("api_key") else {}
        self.process: subprocess.Popen | None = None
        self.env = env or {}

    def start(self) -> ServerProcess:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.serve_doubles", json.dumps(self.settings),
                 str(self.gate.path) if self.gate else ""],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **SERVER_ENV, **self.env}, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self) -> ServerProcess:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited with {self.process.returncode}:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not become ready:\n{self.output()}")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from /metrics (0 when the series does not exist yet)."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=30).text
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.split(" ")[0] == wanted:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.process.poll() is None:
            if self.gate:
                self.gate.open()
            self.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class ThreadServer:
    """The server under uvicorn on a thread of this process, for tests that only need an endpoint to
    talk to (it starts in a second, with no new interpreter to import torch into)."""

    def __init__(self, **settings) -> None:
        import uvicorn
        from neuron_encoder.serve.app import create_app
        from neuron_encoder.serve.settings import ServeSettings
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        app = create_app(ServeSettings(port=port, **settings))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="test-server", daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(60)
