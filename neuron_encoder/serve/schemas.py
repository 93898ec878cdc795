"""Request and response bodies of every route (OpenAI, text-embeddings-inference, SageMaker), and the
functions that parse a body and shape an answer.

No web framework here, only pydantic and numpy: a SageMaker handler (deploy/sagemaker/inference.py)
calls parse_invocation, invocation_response and error_response as they are, without a server.
Request models are strict (a string is not a bool, 1 is not true) and refuse unknown fields, as
text-embeddings-inference's serde types do.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neuron_encoder.serve import errors

try:  # the server's extra has orjson; a bare SageMaker container may not, and gets the same bytes' meaning
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

JSON = "application/json"
TokenIds = list[int]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class OpenAIEmbeddingRequest(_Request):
    """POST /v1/embeddings, as OpenAI's API and its official Python client send it."""

    input: Union[str, list[str], TokenIds, list[TokenIds]] = Field(
        description="a text, a list of texts, a list of token ids, or a list of token id lists")
    model: str | None = Field(None, description="accepted and echoed as the served model's id")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="truncate each embedding to this size, then re-normalise")
    user: str | None = None


class EmbedRequest(_Request):
    """POST /embed (text-embeddings-inference)."""

    inputs: Union[str, list[str]] = Field(description="a text or a list of texts")
    normalize: bool = True
    truncate: bool | None = Field(None, description="cut inputs longer than the largest bucket; "
                                                    "default: the server's --auto-truncate")
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"


class TokenizeRequest(_Request):
    """POST /tokenize (text-embeddings-inference)."""

    inputs: Union[str, list[str]] = Field(description="a text or a list of texts")
    add_special_tokens: bool = True


class InvocationRequest(_Request):
    """POST /invocations (SageMaker), the body of the Hugging Face inference toolkit plus TEI's flags."""

    inputs: Union[str, list[str]] = Field(description="a text or a list of texts")
    normalize: bool = True
    truncate: bool | None = Field(None, description="default false (or the server's --auto-truncate)")


class ErrorBody(BaseModel):
    error: str
    error_type: str


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


REQUEST_MODELS = (OpenAIEmbeddingRequest, EmbedRequest, TokenizeRequest, InvocationRequest)


# ----------------------------------------------------------------------------- parsing

def check_media_type(content_type: str | None) -> None:
    """415 unless the body is declared application/json (parameters such as charset are fine)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON:
        raise errors.UnsupportedMediaType(f"content type {content_type or 'none'!r} is not supported: "
                                          f"send {JSON}")


def parse(model: type[_Request], body: bytes) -> Any:
    """A request model from a JSON body; 400 for text that is not JSON, 422 naming each bad field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise errors.NotJson("the body is not valid JSON") from None
        raise errors.Validation(_describe(model, problems)) from None


def _describe(model: type[_Request], problems: list[dict]) -> str:
    """One clause per bad field; a field with several forms (a union) that matches none says which it takes."""
    by_field: dict[str, list[str]] = {}
    for problem in problems:
        field = str(problem["loc"][0]) if problem["loc"] else "body"
        by_field.setdefault(field, []).append(problem["msg"])
    clauses = []
    for field, messages in by_field.items():
        info = model.model_fields.get(field)
        if len(messages) > 1 and info is not None and info.description:
            clauses.append(f"{field}: must be {info.description}")
        else:
            clauses.append(f"{field}: {messages[0]}")
    return "; ".join(clauses)


def as_list(inputs: str | list, max_inputs: int) -> list:
    """A single input as a list of one; an empty list is a 422, more than max_inputs a 413."""
    items = [inputs] if isinstance(inputs, str) else inputs
    if not items:
        raise errors.Validation("inputs cannot be empty")
    if len(items) > max_inputs:
        raise errors.TooManyInputs(f"{len(items)} inputs in one request; at most {max_inputs} "
                                   "(--max-client-batch-size)")
    return items


def openai_inputs(request: OpenAIEmbeddingRequest, max_inputs: int) -> tuple[list[str] | None, list[TokenIds] | None]:
    """(texts, None) or (None, token id lists) from OpenAI's four input forms."""
    value = request.input
    if isinstance(value, str):
        return [value], None
    if value and all(isinstance(item, int) for item in value):
        return None, [value]  # one input given as token ids
    items = as_list(value, max_inputs)
    if isinstance(items[0], str):
        return items, None
    if any(not ids for ids in items):
        raise errors.Validation("input: a token id list cannot be empty")
    return None, items


def parse_invocation(body: bytes, content_type: str | None, max_inputs: int = 32,
                     payload_limit: int | None = None) -> tuple[list[str], InvocationRequest]:
    """A SageMaker /invocations body -> (texts, the request); ServeError (415, 413, 400, 422) otherwise.

    The contract: application/json {"inputs": str | [str], "normalize": bool = true,
    "truncate": bool = false}; a single string is one input.
    """
    check_media_type(content_type)
    if payload_limit is not None and len(body) > payload_limit:
        raise errors.PayloadTooLarge(f"the body has {len(body)} bytes, more than the limit {payload_limit}")
    request = parse(InvocationRequest, body)
    return as_list(request.inputs, max_inputs), request


# ----------------------------------------------------------------------------- shaping answers

def finish(vectors: np.ndarray, normalize: bool, dimensions: int | None = None) -> np.ndarray:
    """Pooled vectors (N, H) as a client asked for them: the first `dimensions` values, then L2-normalised
    when asked (Matryoshka-style truncation, as OpenAI's `dimensions`)."""
    if dimensions is not None:
        if dimensions > vectors.shape[1]:
            raise errors.Validation(f"dimensions {dimensions} is more than the model's {vectors.shape[1]}")
        vectors = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def dumps(value: Any) -> bytes:
    """JSON bytes; numpy arrays become nested lists (orjson writes float32 in its shortest form)."""
    if orjson is not None:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(value, default=lambda a: a.tolist()).encode()


def embeddings_json(vectors: np.ndarray) -> bytes:
    """[[float, ...], ...]: one embedding per input, in order (TEI's /embed, SageMaker's /invocations)."""
    return dumps(np.ascontiguousarray(vectors, dtype=np.float32))


def invocation_response(pooled: Any, normalize: bool = True) -> bytes:
    """The /invocations answer for pooled vectors (N, H) (a numpy array or a torch tensor)."""
    array = pooled.detach().cpu().float().numpy() if hasattr(pooled, "detach") else np.asarray(pooled)
    return embeddings_json(finish(array.astype(np.float32, copy=False), normalize))


def error_response(error: Exception) -> tuple[int, bytes]:
    """(status, body) for any exception: ServeErrors as themselves, the package's errors mapped, anything
    else a 500 that names no internals."""
    from neuron_encoder.errors import NeuronEncoderError
    if not isinstance(error, errors.ServeError):
        error = (errors.from_package_error(error) if isinstance(error, NeuronEncoderError)
                 else errors.Internal("internal error; the server log has the details"))
    return error.status, error.body()


def openai_response(vectors: np.ndarray, model: str, tokens: int, encoding_format: str) -> bytes:
    """OpenAI's embeddings list; base64 is the little-endian float32 bytes of each vector."""
    if encoding_format == "base64":
        rows: Sequence[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
    else:
        rows = list(vectors)
    return dumps({"object": "list", "model": model,
                  "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def tokenize_response(tokens: list[list[Any]]) -> bytes:
    """[[{id, text, special, start, stop}, ...], ...]: one list per input (TEI's /tokenize)."""
    return dumps([[{"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}
                   for t in row] for row in tokens])
