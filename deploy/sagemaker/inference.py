"""SageMaker handlers for AWS's pytorch-inference-neuronx container: model_fn, input_fn, predict_fn, output_fn.

Shipped as code/inference.py in model.tar.gz, beside code/neuron_encoder/ (this package) and
artifact/ (a compiled artifact); the container puts code/ on the Python path. The contract is our
server's /invocations route, parsed and answered by the same functions (neuron_encoder.serve.invocations):

    request  application/json  {"inputs": str | [str], "normalize": bool = true, "truncate": bool = false}
    response application/json  [[float, ...], ...]   one embedding per input, in order
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
from neuron_encoder.serve.invocations import JSON, Invocation, embeddings_json, finish, parse_invocation

MAX_INPUTS = 256  # texts per request; a bigger batch belongs in several requests (and instances)
log = logging.getLogger(__name__)


class NotAcceptable(errors.ServeError):
    status = 406
    error_type = "Validation"


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
        return parse_invocation(request_body, request_content_type, MAX_INPUTS)
    except errors.ServeError as error:
        return error


def predict_fn(data: Invocation | errors.ServeError, model: Model) -> np.ndarray | errors.ServeError:
    """Embed with the checkpoint's tokenizer through the compiled buckets; L2-normalise when asked."""
    from neuron_encoder.embeddings import embed_texts

    if isinstance(data, errors.ServeError):
        return data
    tokenizer = model.truncating if data.truncate else model.strict
    if tokenizer is None:
        return errors.TokenizerFailed("this model has no tokenizer (random weights), so it cannot embed text")
    try:
        vectors = embed_texts(model.encoder, data.texts, tokenizer, normalize=False).float().numpy()
    except Exception as exc:  # the server's mapping: a long input is 413, a failed model 424, a bug 500
        error = errors.as_serve_error(exc)
        if isinstance(error, errors.Internal):
            log.exception("inference failed")
        return error
    return finish(vectors, data.normalize)


def output_fn(prediction: np.ndarray | errors.ServeError, accept: str, context: Any = None) -> tuple[str, str]:
    """A JSON list of embeddings, or the error object with its status (set through the model server's context)."""
    if (accept or JSON).split(";")[0].strip().lower() not in (JSON, "*/*"):
        prediction = NotAcceptable(f"accept {accept!r} is not supported: accept {JSON}")
    if isinstance(prediction, errors.ServeError):
        if context is not None:
            context.set_response_status(code=prediction.status, phrase=prediction.error_type)
        return prediction.body().decode(), JSON
    return embeddings_json(prediction).decode(), JSON
