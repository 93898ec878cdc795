"""SageMaker's routes: GET /ping (its health check) and POST /invocations (serve.invocations' contract,
shared with the SageMaker handler)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from neuron_encoder.serve import invocations, schemas
from neuron_encoder.serve.bodies import BAD_INPUT, answer, error_responses, read_body, request_body
from neuron_encoder.serve.invocations import JSON
from neuron_encoder.serve.service import Service


def router(service: Service) -> APIRouter:
    routes, limits = APIRouter(), service.settings

    @routes.get("/ping", responses=error_responses(503))
    async def ping() -> Response:
        """SageMaker's health check: 200 once every replica is warm; 503 while loading or draining."""
        service.check_ready()
        return Response(b'{"status":"ready"}', media_type=JSON)

    @routes.post("/invocations", responses={200: {"description": "one embedding per input, in order"},
                                            **BAD_INPUT},
                 openapi_extra=request_body(schemas.InvocationRequest))
    async def sagemaker_invocations(request: Request) -> Response:
        """SageMaker: {"inputs": str | [str], "normalize": true, "truncate": false} -> [[float, ...], ...]."""
        inference = service.check_ready()
        body = invocations.parse_invocation(await read_body(request, limits.payload_limit),
                                            request.headers.get("content-type"), limits.max_client_batch_size)
        result = await inference.embed_texts(body.texts, body.truncate)
        return answer(invocations.embeddings_json(invocations.finish(result.vectors, body.normalize)), request,
                      result, len(body.texts))

    return routes
