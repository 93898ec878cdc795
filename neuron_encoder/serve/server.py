"""One server process: the app under uvicorn until SIGTERM, draining first (workers.py runs one, or
several under a supervisor, each on sockets of its own).

On SIGTERM (or Ctrl-C) it drains: /ping answers 503, new requests get 503, every request already
accepted is answered, and the process exits 0 within --graceful-timeout. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import Callable

import uvicorn

from neuron_encoder.serve.app import create_app
from neuron_encoder.serve.middleware import request_log
from neuron_encoder.serve.replicas import run_batch
from neuron_encoder.serve.service import Service, Team
from neuron_encoder.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, with SIGTERM and SIGINT draining first (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service, self.draining = service, False
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        self.service.on_fatal = lambda: setattr(self, "should_exit", True)
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame) -> None:
        # Not uvicorn's: it would re-raise the signal after shutting down, and exit non-zero.
        if self.draining or not self.service.ready or self.loop is None:
            self.force_exit = self.draining
            self.should_exit = True
            return
        self.draining = True
        log.info("%s: draining (up to %g s): /ping answers 503, accepted requests finish",
                 signal.Signals(sig).name, self.service.settings.graceful_timeout)
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self.service.begin_drain()
        self.loop.create_task(self._exit_when_drained())

    async def _exit_when_drained(self) -> None:
        if not await self.service.drained(self.service.settings.graceful_timeout):
            log.warning("graceful timeout: %d request(s) still in progress", self.service.active)
        self.should_exit = True


def run_server(settings: ServeSettings, run: Callable = run_batch, team: Team | None = None,
               sockets: list[socket.socket] | None = None) -> None:
    """The app under uvicorn until SIGTERM (settings already resolved); raises what stopped the model
    loading. `team` and `sockets`: one worker of several (workers.py), on its own listening socket."""
    service = Service(settings, run, team)
    app = create_app(settings, run, service)
    if settings.json_output:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on", log_level="info")
    if team is None:
        log.info("serving on http://%s:%d (%s)%s", settings.host, settings.port, service.plan.describe(),
                 "; API key required" if settings.api_key else "")
    DrainingServer(config, service).run(sockets)
    if service.fatal is not None:
        raise service.fatal
