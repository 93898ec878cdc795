"""SageMaker's routes: GET /ping (its health check) and POST /invocations (serve.invocations' contract,
shared with the SageMaker handler): an embedder's texts in, embeddings out; on a classifier /predict's body
and answer, on a reranker /rerank's (scores.py, shared with the handler too)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from neuron_encoder.serve import invocations, routes_scores, schemas, scores
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
        if inference.task.kind != "embedding":  # a classifier's body is /predict's, a reranker's /rerank's
            return await scoring(inference, scope, receive)
        body = invocations.parse_invocation(await read_body(scope, receive, limits.payload_limit),
                                            header(scope, b"content-type"), limits.max_client_batch_size)
        result = await inference.embed_texts(body.texts, body.truncate)
        return answer(invocations.embeddings_json(invocations.finish(result.vectors, body.normalize)), scope,
                      result, len(body.texts))

    async def scoring(inference, scope, receive) -> Reply:
        """/invocations on a classifier (a /predict body and answer) or a reranker (/rerank's)."""
        body = invocations.loads(await read_body(scope, receive, limits.payload_limit))
        if inference.task.kind == "classifier":
            return await routes_scores.predict(inference, scores.parse_predict(body, limits.max_client_batch_size),
                                               scope)
        request = scores.parse_rerank(body, limits.max_client_batch_size)
        result, column = await routes_scores.rerank(inference, request)
        return answer(scores.rerank_json(column, request), scope, result, len(request.texts))

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
