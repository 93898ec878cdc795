"""SageMaker handlers for AWS's pytorch-inference-neuronx container: model_fn, input_fn, predict_fn, output_fn.

Shipped as code/inference.py in model.tar.gz, beside code/neuron_encoder/ (this package) and
artifact/ (a compiled artifact); the container puts code/ on the Python path. The JSON contract is
our server's SageMaker route, and text-embeddings-inference's /embed:

    request  application/json  {"inputs": str | [str], "normalize": bool = true, "truncate": bool = false}
    response application/json  [[float, ...], ...]   one embedding per input, in order
    error    application/json  {"error": "...", "error_type": "..."} with a 4xx/5xx status

Only torch, tokenizers and this package's runtime are imported: no CLI, web or AWS libraries.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

JSON = "application/json"
MAX_INPUTS = 256  # texts per request; a bigger batch belongs in several requests (and instances)
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RequestError:
    """An error as data: input_fn and predict_fn return it, output_fn renders it once."""

    status: int
    error: str
    error_type: str  # validation | tokenizer | backend, as the server's errors


@dataclasses.dataclass(frozen=True)
class Request:
    texts: list[str]
    normalize: bool
    truncate: bool


@dataclasses.dataclass(frozen=True)
class Model:
    """The artifact loaded without output normalisation (normalize is per request) and its tokenizers."""

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
    encoder = copy.copy(loaded)  # shares the loaded buckets; pools without normalising
    encoder.config = dataclasses.replace(loaded.config, normalize=False)
    strict = truncating = None
    if tokenizer is not None:
        strict, truncating = copy.copy(tokenizer), copy.copy(tokenizer)
        strict.max_length = loaded.config.max_position_embeddings
        truncating.max_length = loaded.max_seq_len
    log.info("loaded %s (%s, buckets %s), tokenizer %s", directory, loaded.manifest.get("backend"),
             [bucket["name"] for bucket in loaded.manifest["buckets"]], "yes" if tokenizer is not None else "none")
    return Model(encoder, strict, truncating)


def input_fn(request_body: str | bytes, request_content_type: str) -> Request | RequestError:
    """Parse and check the JSON body; anything else is an error for output_fn to render."""
    media_type = (request_content_type or "").split(";")[0].strip().lower()
    if media_type != JSON:
        return RequestError(415, f"content type {request_content_type!r} is not supported: send {JSON}",
                            "validation")
    try:
        body = json.loads(request_body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return RequestError(400, f"the body is not JSON: {exc}", "validation")
    if not isinstance(body, dict) or "inputs" not in body:
        return RequestError(422, 'the body must be a JSON object with "inputs": a string or a list of strings',
                            "validation")
    unknown = sorted(set(body) - {"inputs", "normalize", "truncate"})
    inputs = [body["inputs"]] if isinstance(body["inputs"], str) else body["inputs"]
    flags = {name: body.get(name, default) for name, default in (("normalize", True), ("truncate", False))}
    if unknown:
        problem = f"unknown field(s) {unknown}; known: inputs, normalize, truncate"
    elif not isinstance(inputs, list) or not inputs or not all(isinstance(text, str) for text in inputs):
        problem = '"inputs" must be a string or a non-empty list of strings'
    elif len(inputs) > MAX_INPUTS:
        problem = f"{len(inputs)} inputs in one request; at most {MAX_INPUTS}"
    else:
        problem = next((f'"{name}" must be true or false' for name, v in flags.items() if not isinstance(v, bool)), "")
    if problem:
        return RequestError(422, problem, "validation")
    return Request(inputs, flags["normalize"], flags["truncate"])


def predict_fn(data: Request | RequestError, model: Model) -> torch.Tensor | RequestError:
    """Embed with the checkpoint's tokenizer through the compiled buckets; L2-normalise when asked."""
    from neuron_encoder.embeddings import embed_texts
    from neuron_encoder.errors import NeuronEncoderError, ShapeError

    if isinstance(data, RequestError):
        return data
    tokenizer = model.truncating if data.truncate else model.strict
    if tokenizer is None:
        return RequestError(422, "this model has no tokenizer (random weights), so it cannot embed text",
                            "tokenizer")
    try:
        vectors = embed_texts(model.encoder, data.texts, tokenizer).float()
    except ShapeError as exc:
        return RequestError(422, str(exc), "validation")
    except NeuronEncoderError as exc:
        log.exception("inference failed")
        return RequestError(500, str(exc), "backend")
    return torch.nn.functional.normalize(vectors, dim=-1) if data.normalize else vectors


def output_fn(prediction: torch.Tensor | RequestError, accept: str, context: Any = None) -> tuple[str, str]:
    """A JSON list of embeddings, or the error object with its status (set through the model server's context)."""
    if (accept or JSON).split(";")[0].strip().lower() not in (JSON, "*/*"):
        prediction = RequestError(406, f"accept {accept!r} is not supported: accept {JSON}", "validation")
    if isinstance(prediction, RequestError):
        if context is not None:
            context.set_response_status(code=prediction.status, phrase=prediction.error_type)
        return json.dumps({"error": prediction.error, "error_type": prediction.error_type}), JSON
    return json.dumps(prediction.tolist()), JSON
