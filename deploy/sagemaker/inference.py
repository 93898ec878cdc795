"""SageMaker handlers for AWS's pytorch-inference-neuronx container: model_fn, input_fn, predict_fn, output_fn.

Shipped as code/inference.py in model.tar.gz, beside code/neuron_encoder/ (this package) and
artifact/ (a compiled artifact); the container puts code/ on the Python path. The contract is our
server's /invocations route, parsed and answered by the same functions (neuron_encoder.serve.invocations)
and held to the server's default limits (neuron_encoder.serve.settings.ServeSettings):

    request  application/json  {"inputs": str | [str], "normalize": bool = true, "truncate": bool | null = null}
             at most 32 inputs and 2,000,000 bytes; truncate null is the server's default, --auto-truncate off
    response application/json  [[float, ...], ...]   one embedding per input, in order, whatever Accept says
    error    application/json  {"error": "...", "error_type": "..."} with the server's status and TEI's types

Only torch, tokenizers, numpy and this package's runtime are imported: no CLI, web, pydantic or AWS libraries.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from neuron_encoder.serve import errors
from neuron_encoder.serve.invocations import (JSON, Invocation, embeddings_json, finish, input_too_long,
                                               parse_invocation)
from neuron_encoder.serve.settings import ServeSettings

LIMITS = ServeSettings()  # `neuron-encoder serve`'s defaults: one contract for both ways to serve
log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Model:
    """The loaded artifact and its tokenizers (normalize is per request)."""

    encoder: Any
    strict: Any  # tokenizer that keeps long texts long, so the runtime refuses them (truncate=false)
    truncating: Any  # tokenizer that cuts texts to the largest compiled bucket (truncate=true)


def model_fn(model_dir: str) -> Model:
    """Load model_dir/artifact (or model_dir itself, when it is an artifact) with its own tokenizer."""
    from neuron_encoder import load_compiled

    directory = Path(model_dir) / "artifact"
    if not directory.is_dir():
        directory = Path(model_dir)
    loaded = load_compiled(directory)
    tokenizer = loaded.tokenizer  # the artifact's tokenizer/, None for random weights
    strict = truncating = None
    if tokenizer is not None:
        strict, truncating = copy.copy(tokenizer), copy.copy(tokenizer)
        strict.max_length = loaded.config.max_length
        truncating.max_length = loaded.max_seq_len
    log.info("loaded %s (%s, buckets %s), tokenizer %s", directory, loaded.manifest.get("backend"),
             [bucket["name"] for bucket in loaded.manifest["buckets"]], "yes" if tokenizer is not None else "none")
    return Model(loaded, strict, truncating)


def input_fn(request_body: str | bytes, request_content_type: str) -> Invocation | errors.ServeError:
    """Parse and check the body as the server does; an error is data, for output_fn to render."""
    try:
        return parse_invocation(request_body, request_content_type, LIMITS.max_client_batch_size,
                                LIMITS.payload_limit)
    except errors.ServeError as error:
        return error


def predict_fn(data: Invocation | errors.ServeError, model: Model) -> np.ndarray | errors.ServeError:
    """Embed with the checkpoint's tokenizer through the compiled buckets; L2-normalise when asked."""
    from neuron_encoder.embeddings import embed_texts

    if isinstance(data, errors.ServeError):
        return data
    truncate = LIMITS.auto_truncate if data.truncate is None else data.truncate
    tokenizer = model.truncating if truncate else model.strict
    if tokenizer is None:
        return errors.TokenizerFailed("this model has no tokenizer (random weights), so it cannot embed text")
    if not truncate:  # refused as the server refuses it, before anything runs
        limit = model.encoder.max_seq_len
        for number, ids in enumerate(tokenizer.token_ids(data.texts)):
            if len(ids) > limit:
                return input_too_long(number, len(ids), limit)
    try:
        vectors = embed_texts(model.encoder, data.texts, tokenizer, normalize=False).float().numpy()
    except Exception as exc:  # the server's mapping: a long input is 413, a failed model 424, a bug 500
        error = errors.as_serve_error(exc)
        if isinstance(error, errors.Internal):
            log.exception("inference failed")
        return error
    return finish(vectors, data.normalize)


def output_fn(prediction: np.ndarray | errors.ServeError, accept: str, context: Any = None) -> tuple[str, str]:
    """A JSON list of embeddings, or the error object with its status (set through the model server's context).
    JSON whatever `accept` says, as the server answers (HTTP lets a server disregard Accept)."""
    if isinstance(prediction, errors.ServeError):
        if context is not None:
            context.set_response_status(code=prediction.status, phrase=prediction.error_type)
        return prediction.body().decode(), JSON
    return embeddings_json(prediction).decode(), JSON
