"""The scoring routes of a classifier or reranker: text-embeddings-inference's POST /predict and /rerank,
Cohere/Jina-style POST /v1/rerank and Infinity-style POST /classify (bodies and answers: scores.py). A
rerank of one query and N texts is N (query, text) pairs in the queue, batched with every other request's
inputs."""

from __future__ import annotations

from fastapi import APIRouter

from neuron_encoder.serve import schemas, scores
from neuron_encoder.serve.bodies import BAD_INPUT, Handler, Reply, answer, read_body, request_body, via_fastapi
from neuron_encoder.serve.infer import Embedded, Inference
from neuron_encoder.serve.invocations import loads
from neuron_encoder.serve.service import Service


async def predict(inference: Inference, request: scores.Predict, scope: dict) -> Reply:
    """Every label's score per input, highest first (shared with /invocations on a classifier)."""
    task = inference.need_task("classifier", "reranker")
    result = await inference.score(request.inputs, request.truncate, request.direction, "longest_first")
    table = scores.activate(result.vectors, task.activation, request.raw_scores)
    return answer(scores.predictions_json(table, task.id2label, request.batched), scope, result,
                  len(request.inputs))


async def rerank(inference: Inference, request: scores.Rerank) -> tuple[Embedded, object]:
    """The (query, text) pairs' logits, cut only_second (the query whole), and their scores' column."""
    task = inference.need_task("reranker")
    result = await inference.score([(request.query, text) for text in request.texts], request.truncate,
                                   request.direction, "only_second")
    return result, scores.activate(result.vectors, task.activation, request.raw_scores)[:, 0]


def handlers(service: Service) -> dict[str, Handler]:
    """The POST routes as plain ASGI handlers (bodies.py), by path."""
    limits = service.settings

    async def tei_predict(scope, receive) -> Reply:
        """text-embeddings-inference: {"inputs": text | [a, b] | [...], "truncate", "truncation_direction",
        "raw_scores"} -> [{"score", "label"}] highest first (a batch: one list per input)."""
        inference = service.check_ready()
        body = loads(await read_body(scope, receive, limits.payload_limit))
        return await predict(inference, scores.parse_predict(body, limits.max_client_batch_size), scope)

    async def tei_rerank(scope, receive) -> Reply:
        """text-embeddings-inference: {"query", "texts", "truncate", "truncation_direction", "raw_scores",
        "return_text"} -> [{"index", "score", "text"?}] highest first."""
        inference = service.check_ready()
        request = scores.parse_rerank(loads(await read_body(scope, receive, limits.payload_limit)),
                                      limits.max_client_batch_size)
        result, column = await rerank(inference, request)
        return answer(scores.rerank_json(column, request), scope, result, len(request.texts))

    async def cohere_rerank(scope, receive) -> Reply:
        """Cohere/Jina: {"model", "query", "documents", "top_n", "return_documents"} -> {"id", "results", "model",
        "usage"}."""
        inference = service.check_ready()
        request = scores.parse_cohere_rerank(loads(await read_body(scope, receive, limits.payload_limit)),
                                             limits.max_client_batch_size)
        result, column = await rerank(inference, request)
        return answer(scores.cohere_json(column, request, service.info["model_id"], result.tokens), scope, result,
                      len(request.texts))

    async def infinity_classify(scope, receive) -> Reply:
        """Infinity: {"input": text | [text], "model", "raw_scores"} -> {"object": "classify", "data", "model",
        "usage", "id", "created"}."""
        inference = service.check_ready()
        request = scores.parse_classify(loads(await read_body(scope, receive, limits.payload_limit)),
                                        limits.max_client_batch_size)
        task = inference.need_task("classifier", "reranker")
        result = await inference.score(request.inputs, request.truncate, request.direction, "longest_first")
        table = scores.activate(result.vectors, task.activation, request.raw_scores)
        return answer(scores.classify_json(table, task.id2label, service.info["model_id"], result.tokens), scope,
                      result, len(request.inputs))

    return {"/predict": tei_predict, "/rerank": tei_rerank, "/v1/rerank": cohere_rerank, "/classify": infinity_classify}


def router(service: Service, posts: dict[str, Handler]) -> APIRouter:
    routes = APIRouter()
    for path, model in (("/predict", schemas.PredictRequest), ("/rerank", schemas.RerankRequest),
                        ("/v1/rerank", schemas.CohereRerankRequest), ("/classify", schemas.ClassifyRequest)):
        routes.post(path, responses=BAD_INPUT, openapi_extra=request_body(model))(via_fastapi(posts[path]))
    return routes
