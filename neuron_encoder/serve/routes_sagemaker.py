"""SageMaker's routes: GET /ping (its health check) and POST /invocations (serve.invocations' contract,
shared with the SageMaker handler)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from neuron_encoder.serve import invocations, schemas
from neuron_encoder.serve.bodies import BAD_INPUT, Handler, Reply, answer, error_responses, header, read_body, \
    request_body, via_fastapi
from neuron_encoder.serve.invocations import JSON
from neuron_encoder.serve.service import Service


def handlers(service: Service) -> dict[str, Handler]:
    """The POST routes as plain ASGI handlers (bodies.py), by path."""
    limits = service.settings

    async def sagemaker_invocations(scope, receive) -> Reply:
        """SageMaker: {"inputs": str | [str], "normalize": true, "truncate": false} -> [[float, ...], ...]."""
        inference = service.check_ready()
        body = invocations.parse_invocation(await read_body(scope, receive, limits.payload_limit),
                                            header(scope, b"content-type"), limits.max_client_batch_size)
        result = await inference.embed_texts(body.texts, body.truncate)
        return answer(invocations.embeddings_json(invocations.finish(result.vectors, body.normalize)), scope,
                      result, len(body.texts))

    return {"/invocations": sagemaker_invocations}


def router(service: Service, posts: dict[str, Handler]) -> APIRouter:
    routes = APIRouter()

    @routes.get("/ping", responses=error_responses(503))
    async def ping() -> Response:
        """SageMaker's health check: 200 once every replica is warm; 503 while loading or draining."""
        service.check_ready()
        return Response(b'{"status":"ready"}', media_type=JSON)

    routes.post("/invocations", responses={200: {"description": "one embedding per input, in order"}, **BAD_INPUT},
                openapi_extra=request_body(schemas.InvocationRequest))(via_fastapi(posts["/invocations"]))
    return routes
