"""The HTTP room: FastAPI routes for SageMaker, OpenAI and text-embeddings-inference clients, the
lifespan that loads and warms every replica, and the uvicorn server that drains on SIGTERM.

Routes parse bodies (schemas.py, invocations.py), call Inference and shape the answer; they never touch torch. Every
error is a ServeError rendered once, as {"error", "error_type"}.

Life of the server: it listens at once, /ping and /health answer 503 while the replicas load (or
compile) and warm up every bucket, then 200. On SIGTERM (or Ctrl-C) it drains: /ping answers 503,
new requests get 503, every request already accepted is answered, and the process exits 0 within
--graceful-timeout. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import platform
import signal
import sys
import time
from typing import Any, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuron_encoder import __version__, artifact
from neuron_encoder.serve import errors, invocations, schemas
from neuron_encoder.serve.batcher import Batcher
from neuron_encoder.serve.infer import Embedded, Inference
from neuron_encoder.serve.metrics import Metrics
from neuron_encoder.serve.packing import BucketTable
from neuron_encoder.serve.replicas import ArtifactSource, LoadedReplica, Replicas, plan_replicas, run_batch
from neuron_encoder.serve.settings import ServeSettings, resolve

log = logging.getLogger(__name__)
request_log = logging.getLogger("neuron_encoder.serve.requests")

OPEN_PATHS = frozenset({"/ping", "/health"})  # answered without the API key: health checks carry none
ROUTES = frozenset({"/ping", "/health", "/invocations", "/v1/embeddings", "/v1/models", "/embed", "/tokenize",
                    "/info", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"})
JSON = invocations.JSON


class Service:
    """What the routes share: settings, the replicas, the batcher, the state (loading, ready,
    draining, failed) and the count of requests in progress."""

    def __init__(self, settings: ServeSettings, run: Callable = run_batch) -> None:
        self.settings = settings
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
                               lambda: self.batcher.in_flight if self.batcher else 0)
        self._loading: asyncio.Task | None = None

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
                                   s.auto_truncate)
        self.info = describe(s, self.plan, loaded, table)
        self.batcher.start(loop, self.replicas.threads)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def check_ready(self) -> Inference:
        if self.state == "draining":
            raise errors.Draining("the server is shutting down")
        if self.state == "failed":
            raise errors.Unhealthy(f"the model failed to load ({type(self.fatal).__name__}); the server is stopping")
        if self.state != "ready":
            raise errors.Unhealthy("the model is loading; retry soon")
        return self.inference

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
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self.batcher is not None:
            self.batcher.stop()
        if self.inference is not None:
            self.inference.close()
        if self.replicas is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.replicas.close,
                                                             self.settings.graceful_timeout)


def replica_location(replica: LoadedReplica, plan) -> str:
    """Where a replica runs, as the runtime reports it (the NeuronCores its buckets hold)."""
    if plan.backend == "neuron":
        cores = sorted({core for held in replica.model.placement.values() for core in held})
        return "NeuronCore " + ",".join(map(str, cores))
    if plan.backend == "cuda":
        return f"cuda:{replica.index}"
    return f"CPU, {plan.intra_op_threads} thread(s)"


def describe(settings: ServeSettings, plan, loaded: list[LoadedReplica], table: BucketTable) -> dict[str, Any]:
    """GET /info: the model, the backend, the buckets, the replicas and every limit."""
    import torch
    from neuron_encoder import hardware
    model = loaded[0].model
    manifest = model.manifest
    return {
        "model_id": manifest["model"]["id"], "model_dtype": manifest["precision"],
        "model_type": {"embedding": {"pooling": model.config.pooling}}, "hidden_size": model.config.hidden_size,
        "normalize_by_default": True, "tokenizer": model.tokenizer is not None,
        "backend": manifest["backend"], "target": manifest.get("target"), "artifact": str(model.directory),
        "artifact_sha256": artifact.manifest_hash(model.directory),
        "buckets": [list(bucket) for bucket in sorted(model.buckets)],
        "replicas": plan.count, "replica_plan": plan.describe(),
        "placement": [f"replica {r.index}: " + replica_location(r, plan) for r in loaded],
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


# ----------------------------------------------------------------------------- the ASGI layer

class RequestMiddleware:
    """Around every HTTP request: the API key, the count for draining, the request metrics, and one
    JSON log line (--json-output) that names the route, the status and the times, never the body."""

    def __init__(self, app, service: Service) -> None:
        self.app, self.service = app, service
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
        route = scope["path"] if scope["path"] in ROUTES else "other"
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


async def read_body(request: Request, limit: int) -> bytes:
    """The body after the media type check (415), refused past `limit` bytes (413) without reading it all."""
    invocations.check_media_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    too_large = errors.PayloadTooLarge(f"the body is larger than the limit of {limit} bytes (--payload-limit)")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(body: bytes, request: Request, result: Embedded | None = None, inputs: int | None = None) -> Response:
    start = request.scope["state"]["start_ns"]
    headers = result.headers(start) if result is not None else {}
    if result is not None:
        request.scope["state"]["log"] = {"inputs": inputs, "tokens": result.tokens,
                                         "queue_ms": round(result.queue_s * 1000, 3),
                                         "inference_ms": round(result.inference_s * 1000, 3)}
    return Response(body, media_type=JSON, headers=headers)


def _error_responses(*codes: int) -> dict:
    return {code: {"model": schemas.ErrorBody} for code in codes}


def create_app(settings: ServeSettings, run: Callable = run_batch, service: Service | None = None) -> FastAPI:
    """The FastAPI app; `run` is the replica's model call (replicas.run_batch; tests wrap it to inject
    faults). Long because: every route is declared here, next to the one lifespan they share."""
    service = service or Service(settings, run)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="neuron-encoder", version=__version__, lifespan=lifespan,
                  description="Embeddings from a compiled BERT-style encoder, for SageMaker, OpenAI and "
                              "text-embeddings-inference clients.")
    app.state.service = service
    limits, bad_input = settings, _error_responses(400, 401, 413, 415, 422, 424, 429, 503)

    @app.get("/ping", responses=_error_responses(503))
    async def ping() -> Response:
        """SageMaker's health check: 200 once every replica is warm; 503 while loading or draining."""
        service.check_ready()
        return Response(b'{"status":"ready"}', media_type=JSON)

    @app.get("/health", responses=_error_responses(503))
    async def health() -> Response:
        """200 when the model answers; after a failed batch, a one-input probe decides."""
        inference = service.check_ready()
        if service.batcher.last_batch_failed:
            try:
                await inference.embed_ids([[0]])
            except errors.ServeError as error:
                raise errors.Unhealthy(f"the model fails: {error.message}") from None
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.post("/invocations", responses={200: {"description": "one embedding per input, in order"}, **bad_input},
              openapi_extra=_body(schemas.InvocationRequest))
    async def sagemaker_invocations(request: Request) -> Response:
        """SageMaker: {"inputs": str | [str], "normalize": true, "truncate": false} -> [[float, ...], ...]."""
        inference = service.check_ready()
        body = invocations.parse_invocation(await read_body(request, limits.payload_limit),
                                            request.headers.get("content-type"), limits.max_client_batch_size)
        result = await inference.embed_texts(body.texts, body.truncate)
        return _answer(invocations.embeddings_json(invocations.finish(result.vectors, body.normalize)), request, result,
                       len(body.texts))

    @app.post("/embed", responses=bad_input, openapi_extra=_body(schemas.EmbedRequest))
    async def embed(request: Request) -> Response:
        """text-embeddings-inference: {"inputs", "normalize", "truncate", "truncation_direction"}."""
        inference = service.check_ready()
        body = schemas.parse(schemas.EmbedRequest, await read_body(request, limits.payload_limit))
        texts = invocations.as_list(body.inputs, limits.max_client_batch_size)
        result = await inference.embed_texts(texts, body.truncate, body.truncation_direction)
        return _answer(invocations.embeddings_json(invocations.finish(result.vectors, body.normalize)), request, result,
                       len(texts))

    @app.post("/v1/embeddings", responses={200: {"model": schemas.OpenAIEmbeddingResponse}, **bad_input},
              openapi_extra=_body(schemas.OpenAIEmbeddingRequest))
    async def openai_embeddings(request: Request) -> Response:
        """OpenAI: texts or token ids; float or base64; `dimensions` truncates, then re-normalises."""
        inference = service.check_ready()
        body = schemas.parse(schemas.OpenAIEmbeddingRequest, await read_body(request, limits.payload_limit))
        if body.dimensions is not None and body.dimensions > service.info["hidden_size"]:
            raise errors.Validation(f"dimensions {body.dimensions} is more than the model's "
                                    f"{service.info['hidden_size']}")
        texts, ids = schemas.openai_inputs(body, limits.max_client_batch_size)
        result = await (inference.embed_texts(texts) if texts is not None else inference.embed_ids(ids))
        vectors = invocations.finish(result.vectors, True, body.dimensions)
        return _answer(schemas.openai_response(vectors, service.info["model_id"], result.tokens,
                                               body.encoding_format), request, result, len(vectors))

    @app.get("/v1/models", responses={200: {"model": schemas.ModelList}, **_error_responses(401, 503)})
    async def models() -> Response:
        service.check_ready()
        card = {"id": service.info["model_id"], "object": "model", "created": int(service.started),
                "owned_by": "neuron-encoder"}
        return Response(invocations.dumps({"object": "list", "data": [card]}), media_type=JSON)

    @app.post("/tokenize", responses=bad_input, openapi_extra=_body(schemas.TokenizeRequest))
    async def tokenize(request: Request) -> Response:
        """text-embeddings-inference: each input's tokens, with ids, text and character offsets."""
        inference = service.check_ready()
        body = schemas.parse(schemas.TokenizeRequest, await read_body(request, limits.payload_limit))
        texts = invocations.as_list(body.inputs, limits.max_client_batch_size)
        return Response(schemas.tokenize_response(await inference.tokenize(texts, body.add_special_tokens)),
                        media_type=JSON)

    @app.get("/info", responses=_error_responses(401, 503))
    async def info() -> Response:
        """The model, backend, buckets, replicas and their placement, every limit, versions."""
        service.check_ready()
        return Response(invocations.dumps(service.info), media_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    _handle_errors(app, service)
    _document_bodies(app)
    app.add_middleware(RequestMiddleware, service=service)
    if settings.cors_allow_origin:  # no CORS unless asked
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_allow_origin),
                           allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
    return app


def _body(model) -> dict:
    """The request body of a route that reads its body itself (for 415/413 before parsing), for the docs."""
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _document_bodies(app: FastAPI) -> None:
    """Put the request models into the OpenAPI document, which FastAPI cannot see in these routes."""
    default = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = default()
            _, definitions = models_json_schema([(model, "validation") for model in schemas.REQUEST_MODELS],
                                                ref_template="#/components/schemas/{model}")
            document.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
        return app.openapi_schema

    app.openapi = openapi


def _handle_errors(app: FastAPI, service: Service) -> None:
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


# ----------------------------------------------------------------------------- the server

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


def serve(settings: ServeSettings, api_key_file: str | None = None, run: Callable = run_batch) -> None:
    """`neuron-encoder serve`: the app under uvicorn until SIGTERM; raises what stopped the model loading.

    SageMaker's conventions and the API key's sources apply first (settings.resolve).
    """
    settings = resolve(settings, api_key_file=api_key_file)
    service = Service(settings, run)
    app = create_app(settings, run, service)
    if settings.json_output:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on", log_level="info")
    log.info("serving on http://%s:%d (%s)%s", settings.host, settings.port, service.plan.describe(),
             "; API key required" if settings.api_key else "")
    DrainingServer(config, service).run()
    if service.fatal is not None:
        raise service.fatal
