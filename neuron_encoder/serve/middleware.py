"""The ASGI layer around every route: the API key, the count of requests in progress (for draining),
the request metrics, one JSON log line per request (--json-output), and every failure rendered once as
{"error", "error_type"} with its status.

The routes that read a body (bodies.Handler) are called from here directly, without FastAPI's routing
and Request objects: the hot path of a one-text request is this layer, the handler, the queue and the
answer. Every other route (health, /info, /metrics, the docs) goes through FastAPI.
"""

from __future__ import annotations

import hmac
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuron_encoder.serve import errors
from neuron_encoder.serve.bodies import Handler
from neuron_encoder.serve.invocations import JSON
from neuron_encoder.serve.service import Service

log = logging.getLogger(__name__)
request_log = logging.getLogger("neuron_encoder.serve.requests")

OPEN_PATHS = frozenset({"/ping", "/health"})  # answered without the API key: health checks carry none
_JSON_HEADER = (b"content-type", JSON.encode())


class RequestMiddleware:
    """Around every HTTP request: the API key, the count for draining, the request metrics, and one
    JSON log line (--json-output) that names the route, the status and the times, never the body.
    `posts` are the plain handlers of the POST routes, answered here."""

    def __init__(self, app, service: Service, routes: frozenset[str], posts: dict[str, Handler]) -> None:
        self.app, self.service, self.routes, self.posts = app, service, routes, posts  # metrics: other paths "other"
        key = service.settings.api_key
        self.key = f"Bearer {key}".encode() if key else None
        self._observed: dict[tuple[str, int], tuple] = {}  # (route, status) -> its metric children, made once

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
            handler = self.posts.get(scope["path"]) if scope["method"] == "POST" else None
            if self.key and scope["path"] not in OPEN_PATHS and not self._authorised(scope):
                status[0] = await self._send_error(send, errors.Unauthorized())
            elif handler is not None:
                status[0] = await self._answer(handler, scope, receive, send)
            else:
                await self.app(scope, receive, send_and_watch)
        finally:
            service.active -= 1
            if service.active == 0 and service.state in ("draining", "failed"):
                service.idle.set()
            self._record(scope, status[0], start)

    async def _answer(self, handler: Handler, scope, receive, send) -> int:
        """A body route, called directly; its status."""
        try:
            reply = await handler(scope, receive)
        except Exception as exc:  # every failure is an answer (errors.as_serve_error)
            served = errors.as_serve_error(exc)
            if isinstance(served, errors.Internal):
                log.error("unexpected error in %s %s", scope["method"], scope["path"], exc_info=exc)
            return await self._send_error(send, served)
        if self.service.settings.json_output:
            scope["state"]["log"] = reply.log()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_JSON_HEADER, (b"content-length", b"%d" % len(reply.body)), *reply.headers]})
        await send({"type": "http.response.body", "body": reply.body})
        return 200

    async def _send_error(self, send, error: errors.ServeError) -> int:
        count_rejection(self.service, error)
        body = error.body()
        headers = [_JSON_HEADER, (b"content-length", b"%d" % len(body))]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return error.status

    def _authorised(self, scope) -> bool:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        return hmac.compare_digest(scheme.lower() + b" " + token.strip(), b"bearer " + self.key[7:])

    def _record(self, scope, status: int, start: int) -> None:
        route = scope["path"] if scope["path"] in self.routes else "other"
        seconds = (time.perf_counter_ns() - start) / 1e9
        observed = self._observed.get((route, status))
        if observed is None:
            metrics = self.service.metrics
            observed = self._observed[(route, status)] = (metrics.requests.labels(route, str(status)),
                                                          metrics.request_duration.labels(route))
        observed[0].inc()
        observed[1].observe(seconds)
        if self.service.settings.json_output:
            line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "method": scope["method"],
                    "route": route, "status": status, "total_ms": round(seconds * 1000, 3),
                    **scope["state"].get("log", {})}
            request_log.info(json.dumps(line))


def count_rejection(service: Service, error: errors.ServeError) -> None:
    if error.reason:
        service.metrics.rejected.labels(error.reason).inc()


def handle_errors(app: FastAPI, service: Service) -> None:
    """Every failure in a FastAPI route becomes {"error", "error_type"} with its status; refusals are
    counted by reason (as RequestMiddleware does for the routes it answers itself)."""

    def render(error: errors.ServeError) -> Response:
        count_rejection(service, error)
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
