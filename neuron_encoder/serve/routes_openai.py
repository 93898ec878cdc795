"""OpenAI's routes: POST /v1/embeddings (texts or token ids; float or base64; `dimensions`) and
GET /v1/models."""

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

    async def openai_embeddings(scope, receive) -> Reply:
        """OpenAI: texts or token ids; float or base64; `dimensions` truncates, then re-normalises."""
        inference = service.check_ready()
        body = schemas.parse(schemas.OpenAIEmbeddingRequest, await read_body(scope, receive, limits.payload_limit))
        if body.dimensions is not None and body.dimensions > service.info["hidden_size"]:
            raise errors.Validation(f"dimensions {body.dimensions} is more than the model's "
                                    f"{service.info['hidden_size']}")
        texts, ids = schemas.openai_inputs(body, limits.max_client_batch_size)
        result = await (inference.embed_texts(texts) if texts is not None else inference.embed_ids(ids))
        vectors = invocations.finish(result.vectors, True, body.dimensions)
        return answer(schemas.openai_response(vectors, service.info["model_id"], result.tokens,
                                              body.encoding_format), scope, result, len(vectors))

    return {"/v1/embeddings": openai_embeddings}


def router(service: Service, posts: dict[str, Handler]) -> APIRouter:
    routes = APIRouter()
    routes.post("/v1/embeddings", responses={200: {"model": schemas.OpenAIEmbeddingResponse}, **BAD_INPUT},
                openapi_extra=request_body(schemas.OpenAIEmbeddingRequest))(via_fastapi(posts["/v1/embeddings"]))

    @routes.get("/v1/models", responses={200: {"model": schemas.ModelList}, **error_responses(401, 503)})
    async def models() -> Response:
        service.check_ready()
        card = {"id": service.info["model_id"], "object": "model", "created": int(service.started),
                "owned_by": "neuron-encoder"}
        return Response(invocations.dumps({"object": "list", "data": [card]}), media_type=JSON)

    return routes
