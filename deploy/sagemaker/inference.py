"""SageMaker handlers for AWS's pytorch-inference-neuronx container: model_fn, input_fn, predict_fn, output_fn.

Shipped as code/inference.py in model.tar.gz, beside code/neuron_encoder/ (this package) and
artifact/ (a compiled artifact); the container puts code/ on the Python path. The contract is our
server's /invocations route, parsed and answered by the same functions (neuron_encoder.serve.invocations)
and held to the server's default limits (neuron_encoder.serve.settings.ServeSettings):

    request  application/json  {"inputs": str | [str], "normalize": bool = true, "truncate": bool | null = null}
             at most 32 inputs and 2,000,000 bytes; truncate null is the server's default, --auto-truncate off
    response application/json  [[float, ...], ...]   one embedding per input, in order, whatever Accept says

A classifier's artifact takes the server's /predict body and answers as /predict does, a reranker's /rerank's
(neuron_encoder.serve.scores parses and answers both, for the server and here):

    classifier  {"inputs": str | [a, b] | [str | [a, b], ...], "truncate", "truncation_direction", "raw_scores"}
                -> [{"score", "label"}, ...] highest first (a list of inputs: one such list per input)
    reranker    {"query", "texts", "truncate", "truncation_direction", "raw_scores", "return_text"}
                -> [{"index", "score", "text"?}, ...] highest first
    error    application/json  {"error": "...", "error_type": "..."} with the server's status and TEI's types

Only torch, tokenizers, numpy and this package's runtime are imported: no CLI, web, pydantic or AWS libraries.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from neuron_encoder.serve import errors, scores
from neuron_encoder.serve.invocations import (JSON, Invocation, embeddings_json, finish, fit_rows, invocation,
                                               read_json)
from neuron_encoder.serve.settings import ServeSettings

LIMITS = ServeSettings()  # `neuron-encoder serve`'s defaults: one contract for both ways to serve
log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Model:
    """The loaded artifact and its tokenizer (None for random weights); normalize is per request."""

    encoder: Any
    tokenizer: Any


def model_fn(model_dir: str) -> Model:
    """Load model_dir/artifact (or model_dir itself, when it is an artifact) with its own tokenizer."""
    from neuron_encoder import load_compiled

    directory = Path(model_dir) / "artifact"
    if not directory.is_dir():
        directory = Path(model_dir)
    loaded = load_compiled(directory)
    tokenizer = loaded.tokenizer  # the artifact's tokenizer/, None for random weights
    log.info("loaded %s (%s, buckets %s), tokenizer %s", directory, loaded.manifest.get("backend"),
             [bucket["name"] for bucket in loaded.manifest["buckets"]], "yes" if tokenizer is not None else "none")
    return Model(loaded, tokenizer)


@dataclasses.dataclass(frozen=True)
class Body:
    """A request's JSON value, checked for media type and size: what it means is the model's task's to say."""

    value: Any


def input_fn(request_body: str | bytes, request_content_type: str) -> Body | errors.ServeError:
    """Check the body as the server does (415, 413, 400); an error is data, for output_fn to render."""
    try:
        return Body(read_json(request_body, request_content_type, LIMITS.payload_limit))
    except errors.ServeError as error:
        return error


def predict_fn(data: Body | errors.ServeError, model: Model) -> np.ndarray | bytes | errors.ServeError:
    """The body parsed as the model's task reads it, then embedded (vectors) or scored (the answer's JSON)."""
    if isinstance(data, errors.ServeError):
        return data
    try:
        if model.encoder.task.kind == "embedding":
            return _embed(invocation(data.value, LIMITS.max_client_batch_size), model)
        return _score(data.value, model)
    except Exception as exc:  # the server's mapping: a bad body 422, a long input 413, a failed model 424, a bug 500
        error = errors.as_serve_error(exc)
        if isinstance(error, errors.Internal):
            log.exception("inference failed")
        return error


def _embed(data: Invocation, model: Model) -> np.ndarray | errors.ServeError:
    """Embed with the checkpoint's tokenizer through the compiled buckets, as the server does: token ids
    once, fitted to the largest bucket (cut, or refused with a 413), run by the artifact's plan."""
    if model.tokenizer is None:
        return errors.TokenizerFailed("this model has no tokenizer (random weights), so it cannot embed text")
    truncate = LIMITS.auto_truncate if data.truncate is None else data.truncate
    rows = fit_rows(model.tokenizer.token_ids(data.texts), model.encoder.max_seq_len, truncate)
    vectors = model.encoder.embed_rows(rows, normalize=False).float().numpy()
    return finish(vectors, data.normalize)


def _score(value: Any, model: Model) -> bytes | errors.ServeError:
    """A classifier's /predict or a reranker's /rerank, as the server answers them (pairs in the tokenizer's
    template, a reranker's cut only_second; the logits of the compiled head, scored as the task says)."""
    task, limit = model.encoder.task, model.encoder.max_seq_len
    if model.tokenizer is None:
        return errors.TokenizerFailed("this model has no tokenizer (random weights), so it cannot score text")
    if task.kind == "classifier":
        request = scores.parse_predict(value, LIMITS.max_client_batch_size)
        inputs, strategy = request.inputs, "longest_first"
    else:
        request = scores.parse_rerank(value, LIMITS.max_client_batch_size)
        inputs, strategy = [(request.query, text) for text in request.texts], "only_second"
    truncate = LIMITS.auto_truncate if request.truncate is None else request.truncate
    rows = model.tokenizer.rows(inputs, limit, truncate, request.direction, strategy)
    table = scores.activate(model.encoder.logits_rows(rows).float().numpy(), task.activation, request.raw_scores)
    if task.kind == "classifier":
        return scores.predictions_json(table, task.id2label, request.batched)
    return scores.rerank_json(table[:, 0], request)


def output_fn(prediction: np.ndarray | errors.ServeError, accept: str, context: Any = None) -> tuple[str, str]:
    """A JSON list of embeddings, or the error object with its status (set through the model server's context).
    JSON whatever `accept` says, as the server answers (HTTP lets a server disregard Accept)."""
    if isinstance(prediction, errors.ServeError):
        if context is not None:
            context.set_response_status(code=prediction.status, phrase=prediction.error_type)
        return prediction.body().decode(), JSON
    if isinstance(prediction, bytes):  # a classifier's or reranker's answer, already JSON
        return prediction.decode(), JSON
    return embeddings_json(prediction).decode(), JSON
