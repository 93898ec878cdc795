"""The ASGI layer around every route: the API key, the count of requests in progress (for draining),
the request metrics, one JSON log line per request (--json-output), and every failure rendered once as
{"error", "error_type"} with its status."""

from __future__ import annotations

import hmac
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuron_encoder.serve import errors
from neuron_encoder.serve.invocations import JSON
from neuron_encoder.serve.service import Service

log = logging.getLogger(__name__)
request_log = logging.getLogger("neuron_encoder.serve.requests")

OPEN_PATHS = frozenset({"/ping", "/health"})  # answered without the API key: health checks carry none


class RequestMiddleware:
    """Around every HTTP request: the API key, the count for draining, the request metrics, and one
    JSON log line (--json-output) that names the route, the status and the times, never the body."""

    def __init__(self, app, service: Service, routes: frozenset[str]) -> None:
        self.app, self.service, self.routes = app, service, routes  # metrics label other paths "other"
        key = service.settings.api_key
        self.key = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, start = self.service, time.perf_counter_ns()
        scope.setdefault("state", {})["start_ns"] = start
        status = [500]

        async def send_and_watch(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        service.active += 1
        service.idle.clear()
        try:
            if self.key and scope["path"] not in OPEN_PATHS and not self._authorised(scope):
                await _send_error(send_and_watch, errors.Unauthorized())
            else:
                await self.app(scope, receive, send_and_watch)
        finally:
            service.active -= 1
            if service.active == 0 and service.state in ("draining", "failed"):
                service.idle.set()
            self._record(scope, status[0], start)

    def _authorised(self, scope) -> bool:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        return hmac.compare_digest(scheme.lower() + b" " + token.strip(), b"bearer " + self.key[7:])

    def _record(self, scope, status: int, start: int) -> None:
        route = scope["path"] if scope["path"] in self.routes else "other"
        seconds = (time.perf_counter_ns() - start) / 1e9
        metrics = self.service.metrics
        metrics.requests.labels(route, str(status)).inc()
        metrics.request_duration.labels(route).observe(seconds)
        if self.service.settings.json_output:
            line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "method": scope["method"],
                    "route": route, "status": status, "total_ms": round(seconds * 1000, 3),
                    **scope["state"].get("log", {})}
            request_log.info(json.dumps(line))


async def _send_error(send, error: errors.ServeError) -> None:
    headers = [(b"content-type", JSON.encode())] + [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": error.body()})


def handle_errors(app: FastAPI, service: Service) -> None:
    """Every failure becomes {"error", "error_type"} with its status; refusals are counted by reason."""

    def render(error: errors.ServeError) -> Response:
        if error.reason:
            service.metrics.rejected.labels(error.reason).inc()
        return Response(error.body(), status_code=error.status, media_type=JSON, headers=error.headers)

    @app.exception_handler(errors.ServeError)
    async def serve_error(request: Request, error: errors.ServeError) -> Response:
        return render(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        kind = {404: errors.NotFound, 405: errors.MethodNotAllowed}.get(error.status_code, errors.Validation)
        return render(kind(f"{request.method} {request.url.path}: {error.detail}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        served = errors.as_serve_error(error)
        if isinstance(served, errors.Internal):
            log.exception("unexpected error in %s %s", request.method, request.url.path)
        return render(served)
