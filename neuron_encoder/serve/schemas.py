"""Request and response bodies of every route (OpenAI, text-embeddings-inference, SageMaker), and the
functions that parse a body and shape an answer.

No web framework here, only pydantic and numpy; what needs neither (SageMaker's /invocations, the
JSON of embeddings and errors) is in invocations.py, which AWS's own containers can run.
Request models are strict (a string is not a bool, 1 is not true) and refuse unknown fields, as
text-embeddings-inference's serde types do.

The models are the contract (the OpenAPI document, the 422 messages), but a valid body never builds
one: `parse` checks it against FAST_CHECKS, plain functions that accept exactly what the model accepts
(a test holds them to the same answers), and only a body they refuse goes through pydantic, for its
exact message. Building a model cost more per request than the rest of the route.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any, Callable, Literal, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neuron_encoder.serve import errors
from neuron_encoder.serve.invocations import as_list, dumps, orjson

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
    """POST /invocations (SageMaker), the body of the Hugging Face inference toolkit plus TEI's flags.
    The OpenAPI schema only: invocations.parse_invocation parses it without pydantic (a test holds the
    two to the same answers)."""

    inputs: Union[str, list[str]] = Field(description="a text or a list of texts")
    normalize: bool = True
    truncate: bool | None = Field(None, description="default false (or the server's --auto-truncate)")


class PredictRequest(_Request):
    """POST /predict (text-embeddings-inference), a classifier's or reranker's. The OpenAPI schema only:
    scores.parse_predict parses it without pydantic, as the SageMaker handler does."""

    inputs: Union[str, list[str], list[Union[str, list[str]]]] = Field(
        description="a text, a pair [a, b], or a list of texts, [text] and pairs")
    truncate: bool | None = Field(None, description="default: the server's --auto-truncate")
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: bool = Field(False, description="the logits, not the model's scores")


class RerankRequest(_Request):
    """POST /rerank (text-embeddings-inference), a reranker's; parsed by scores.parse_rerank."""

    query: str
    texts: list[str] = Field(description="scored as (query, text) pairs; the query is never cut")
    truncate: bool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: bool = False
    return_text: bool = False


class CohereDocument(_Request):
    text: str


class CohereRerankRequest(_Request):
    """POST /v1/rerank (Cohere and Jina's rerank API), a reranker's; parsed by scores.parse_cohere_rerank."""

    model: str | None = Field(None, description="accepted and echoed as the served model's id")
    query: str
    documents: list[Union[str, CohereDocument]]
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    max_chunks_per_doc: int | None = Field(None, description="accepted and disregarded")


class ClassifyRequest(_Request):
    """POST /classify (Infinity's classification API), a classifier's; parsed by scores.parse_classify."""

    input: Union[str, list[str]] = Field(description="a text or a list of texts (long ones are cut)")
    model: str | None = Field(None, description="accepted and echoed as the served model's id")
    raw_scores: bool = False


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


REQUEST_MODELS = (OpenAIEmbeddingRequest, EmbedRequest, TokenizeRequest, InvocationRequest, PredictRequest,
                  RerankRequest, CohereRerankRequest, ClassifyRequest)


# ----------------------------------------------------------------------------- parsing

def _texts(value: Any) -> bool:
    return type(value) is str or type(value) is list and all(type(text) is str for text in value)


def _ids(value: Any) -> bool:
    return type(value) is list and all(type(i) is int for i in value)  # strict: true is not 1


def _openai_input(value: Any) -> bool:
    return _texts(value) or _ids(value) or type(value) is list and all(_ids(ids) for ids in value)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _one_of(*allowed: str) -> Callable[[Any], bool]:
    return lambda value: type(value) is str and value in allowed


_bool = lambda value: type(value) is bool
_text = lambda value: type(value) is str

# Each request model's fields, as plain checks that accept what the model's (strict) validation accepts.
FAST_CHECKS: dict[type, dict[str, Callable[[Any], bool]]] = {
    OpenAIEmbeddingRequest: {"input": _openai_input, "model": _optional(_text),
                             "encoding_format": _one_of("float", "base64"),
                             "dimensions": _optional(lambda d: type(d) is int and d >= 1), "user": _optional(_text)},
    EmbedRequest: {"inputs": _texts, "normalize": _bool, "truncate": _optional(_bool),
                   "truncation_direction": _one_of("Right", "Left", "right", "left")},
    TokenizeRequest: {"inputs": _texts, "add_special_tokens": _bool},
}
_DEFAULTS = {model: {name: info.default for name, info in model.model_fields.items() if not info.is_required()}
             for model in FAST_CHECKS}
_REQUIRED = {model: frozenset(name for name, info in model.model_fields.items() if info.is_required())
             for model in FAST_CHECKS}


def parse_fast(model: type[_Request], body: bytes) -> SimpleNamespace | None:
    """The body's fields (with the model's defaults) when it is valid JSON the model accepts; None
    when it may not be, for `parse` to let pydantic decide and word the error."""
    if orjson is None:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:  # also what orjson alone refuses (ints past 64 bits, NaN): pydantic decides
        return None
    checks = FAST_CHECKS[model]
    if type(value) is not dict or not _REQUIRED[model] <= value.keys():
        return None
    for name, field in value.items():
        check = checks.get(name)
        if check is None or not check(field):
            return None
    return SimpleNamespace(**{**_DEFAULTS[model], **value})


def parse(model: type[_Request], body: bytes) -> Any:
    """A request's fields from a JSON body; 400 for text that is not JSON, 422 naming each bad field.
    Valid bodies never build a model (parse_fast); the rest are the model's to judge and describe."""
    if model in FAST_CHECKS:
        fields = parse_fast(model, body)
        if fields is not None:
            return fields
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


def openai_inputs(request: Any, max_inputs: int) -> tuple[list[str] | None, list[TokenIds] | None]:
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


# ----------------------------------------------------------------------------- shaping answers

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
