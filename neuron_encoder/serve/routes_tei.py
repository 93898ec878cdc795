"""text-embeddings-inference's routes: POST /embed and /tokenize, GET /health, /info and /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from neuron_encoder.serve import errors, invocations, schemas
from neuron_encoder.serve.bodies import BAD_INPUT, Handler, Reply, answer, error_responses, read_body, request_body, \
    via_fastapi
from neuron_encoder.serve.invocations import JSON
from neuron_encoder.serve.service import Service


def handlers(service: Service) -> dict[str, Handler]:
    """The POST routes as plain ASGI handlers (bodies.py), by path."""
    limits = service.settings

    async def embed(scope, receive) -> Reply:
        """text-embeddings-inference: {"inputs", "normalize", "truncate", "truncation_direction"}."""
        inference = service.check_ready()
        body = schemas.parse(schemas.EmbedRequest, await read_body(scope, receive, limits.payload_limit))
        texts = invocations.as_list(body.inputs, limits.max_client_batch_size)
        result = await inference.embed_texts(texts, body.truncate, body.truncation_direction)
        return answer(invocations.embeddings_json(invocations.finish(result.vectors, body.normalize)), scope,
                      result, len(texts))

    async def tokenize(scope, receive) -> Reply:
        """text-embeddings-inference: each input's tokens, with ids, text and character offsets."""
        inference = service.check_ready()
        body = schemas.parse(schemas.TokenizeRequest, await read_body(scope, receive, limits.payload_limit))
        texts = invocations.as_list(body.inputs, limits.max_client_batch_size)
        return Reply(schemas.tokenize_response(await inference.tokenize(texts, body.add_special_tokens)))

    return {"/embed": embed, "/tokenize": tokenize}


def router(service: Service, posts: dict[str, Handler]) -> APIRouter:
    routes = APIRouter()

    @routes.get("/health", responses=error_responses(503))
    async def health() -> Response:
        """200 when the model answers; after a failed batch, a one-input probe decides."""
        inference = service.check_ready()
        if service.batcher.last_batch_failed:
            try:
                await inference.probe()
            except errors.ServeError as error:
                raise errors.Unhealthy(f"the model fails: {error.message}") from None
        return Response(b'{"status":"ok"}', media_type=JSON)

    routes.post("/embed", responses=BAD_INPUT, openapi_extra=request_body(schemas.EmbedRequest))(
        via_fastapi(posts["/embed"]))
    routes.post("/tokenize", responses=BAD_INPUT, openapi_extra=request_body(schemas.TokenizeRequest))(
        via_fastapi(posts["/tokenize"]))

    @routes.get("/info", responses=error_responses(401, 503))
    async def info() -> Response:
        """The model, backend, buckets, replicas and their placement, every limit, versions."""
        service.check_ready()
        return Response(invocations.dumps(service.info), media_type=JSON)

    @routes.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return routes
