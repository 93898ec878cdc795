"""The bodies of the scoring routes, parsed and answered with nothing but the standard library and numpy
(as invocations.py, so the SageMaker handler answers as the server does): text-embeddings-inference's
/predict and /rerank, Cohere/Jina-style /v1/rerank, and scores from logits as the model's task says.

/predict: {"inputs": str | [a, b] (one pair) | [str | [str] | [a, b], ...], "truncate", "truncation_direction",
"raw_scores": false} -> [{"score", "label"}] highest first (a batch: one such list per input).
/rerank: {"query", "texts", "truncate", "truncation_direction", "raw_scores": false, "return_text": false}
-> [{"index", "score", "text"?}] highest first. /v1/rerank: {"model", "query", "documents": [str | {"text"}],
"top_n", "return_documents": false} -> {"id", "results": [{"index", "relevance_score", "document"?}],
"model", "usage"}. Infinity-style /classify: {"input": str | [str], "model", "raw_scores": false} ->
{"object": "classify", "data": [[{"score", "label"}], ...], "model", "usage", "id", "created"}. Unknown fields
are refused (422), as on every other route.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from neuron_encoder.serve import errors
from neuron_encoder.serve.invocations import as_list, dumps

PREDICT_FIELDS = ("inputs", "truncate", "truncation_direction", "raw_scores")
RERANK_FIELDS = ("query", "texts", "truncate", "truncation_direction", "raw_scores", "return_text")
COHERE_FIELDS = ("model", "query", "documents", "top_n", "return_documents", "max_chunks_per_doc")
CLASSIFY_FIELDS = ("input", "model", "raw_scores")


@dataclass(frozen=True)
class Predict:
    """Texts or (a, b) pairs to classify; `batched` when the body sent a list of inputs."""

    inputs: list[str | tuple[str, str]]
    batched: bool
    truncate: bool | None = None
    direction: str = "right"
    raw_scores: bool = False


@dataclass(frozen=True)
class Rerank:
    """One query and its texts (pairs (query, text), cut only_second); how to answer them."""

    query: str
    texts: list[str]
    truncate: bool | None = None
    direction: str = "right"
    raw_scores: bool = False
    return_text: bool = False
    top_n: int | None = None


def _object(value: Any, fields: Sequence[str], required: Sequence[str]) -> dict:
    if not isinstance(value, dict):
        raise errors.Validation(f"body: must be a JSON object with {', '.join(map(repr, required))}")
    unknown = sorted(set(value) - set(fields))
    if unknown:  # worded as pydantic words it on the other routes
        raise errors.Validation("; ".join(f"{name}: Extra inputs are not permitted" for name in unknown))
    for name in required:
        if name not in value:
            raise errors.Validation(f"{name}: Field required")
    return value


def _flag(value: dict, name: str, default: bool | None, nullable: bool = False) -> bool | None:
    flag = value.get(name, default)
    if not (isinstance(flag, bool) or nullable and flag is None):
        raise errors.Validation(f"{name}: must be true or false" + (" or null" if nullable else ""))
    return flag


def _direction(value: dict) -> str:
    direction = value.get("truncation_direction", "Right")
    if direction not in ("Right", "Left", "right", "left"):
        raise errors.Validation("truncation_direction: must be 'Right' or 'Left'")
    return direction.lower()


def _sequence(item: Any, number: int) -> str | tuple[str, str]:
    """One input of a batch: a text, [text], or a pair [a, b]."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and len(item) in (1, 2) and all(isinstance(text, str) for text in item):
        return item[0] if len(item) == 1 else (item[0], item[1])
    raise errors.Validation(f"inputs[{number}]: must be a text, [text] or a pair [text, text]")


def parse_predict(value: Any, max_inputs: int) -> Predict:
    """A /predict body (a JSON value) -> Predict; a ServeError (422, 413) otherwise."""
    value = _object(value, PREDICT_FIELDS, ("inputs",))
    inputs = value["inputs"]
    if isinstance(inputs, str):
        items, batched = [inputs], False
    elif isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(text, str) for text in inputs):
        items, batched = [(inputs[0], inputs[1])], False  # [a, b] is one pair, as TEI reads it
    elif isinstance(inputs, list):
        items, batched = [_sequence(item, number) for number, item in enumerate(inputs)], True
    else:
        raise errors.Validation("inputs: must be a text, a pair [text, text] or a list of those")
    return Predict(as_list(items, max_inputs), batched, _flag(value, "truncate", None, True), _direction(value),
                   _flag(value, "raw_scores", False))


def _texts(texts: Any, name: str, max_inputs: int) -> list[str]:
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise errors.Validation(f"{name}: must be a list of texts")
    return as_list(texts, max_inputs)  # one pair per text: --max-client-batch-size counts pairs


def parse_rerank(value: Any, max_inputs: int) -> Rerank:
    """A /rerank body -> Rerank; a ServeError (422, 413) otherwise."""
    value = _object(value, RERANK_FIELDS, ("query", "texts"))
    if not isinstance(value["query"], str):
        raise errors.Validation("query: must be a text")
    return Rerank(value["query"], _texts(value["texts"], "texts", max_inputs), _flag(value, "truncate", None, True),
                  _direction(value), _flag(value, "raw_scores", False), _flag(value, "return_text", False))


def parse_cohere_rerank(value: Any, max_inputs: int) -> Rerank:
    """A Cohere/Jina-style /v1/rerank body -> Rerank (documents as texts or {"text"}; long ones are cut)."""
    value = _object(value, COHERE_FIELDS, ("query", "documents"))
    if not isinstance(value["query"], str):
        raise errors.Validation("query: must be a text")
    documents = value["documents"]
    if isinstance(documents, list):
        documents = [doc["text"] if isinstance(doc, dict) and set(doc) == {"text"} else doc for doc in documents]
    top_n = value.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise errors.Validation("top_n: must be a whole number of at least 1")
    if value.get("model") is not None and not isinstance(value["model"], str):
        raise errors.Validation("model: must be a text")
    return Rerank(value["query"], _texts(documents, "documents", max_inputs), True, "right", False,
                  _flag(value, "return_documents", False), top_n)


def parse_classify(value: Any, max_inputs: int) -> Predict:
    """An Infinity-style /classify body -> Predict (texts only; long ones are cut)."""
    value = _object(value, CLASSIFY_FIELDS, ("input",))
    texts = [value["input"]] if isinstance(value["input"], str) else value["input"]
    if value.get("model") is not None and not isinstance(value["model"], str):
        raise errors.Validation("model: must be a text")
    return Predict(_texts(texts, "input", max_inputs), True, True, "right", _flag(value, "raw_scores", False))


def activate(logits: np.ndarray, activation: str, raw: bool = False) -> np.ndarray:
    """Scores (N, L) from logits as task.scores computes them: sigmoid, softmax over labels, or as they are."""
    logits = np.asarray(logits, dtype=np.float32)
    if raw or activation == "none":
        return logits
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predictions_json(table: np.ndarray, labels: Sequence[str], batched: bool) -> bytes:
    """[{"score", "label"}, ...] highest first per input; a batch is a list of those."""
    rows = [sorted(({"score": score, "label": labels[i]} for i, score in enumerate(row)),
                   key=lambda prediction: -prediction["score"]) for row in table.tolist()]
    return dumps(rows if batched else rows[0])


def ranked(column: np.ndarray, top_n: int | None = None) -> list[tuple[int, float]]:
    """(index, score) highest first (ties in input order), the first `top_n`."""
    order = sorted(range(len(column)), key=lambda i: -column[i])
    return [(i, float(column[i])) for i in order[:top_n]]


def rerank_json(column: np.ndarray, request: Rerank) -> bytes:
    """text-embeddings-inference's /rerank answer: [{"index", "score", "text"?}] highest first."""
    return dumps([{"index": i, "score": score, **({"text": request.texts[i]} if request.return_text else {})}
                  for i, score in ranked(column)])


def cohere_json(column: np.ndarray, request: Rerank, model: str, tokens: int) -> bytes:
    """Cohere/Jina's /v1/rerank answer."""
    results = [{"index": i, "relevance_score": score,
                **({"document": {"text": request.texts[i]}} if request.return_text else {})}
               for i, score in ranked(column, request.top_n)]
    return dumps({"id": str(uuid.uuid4()), "results": results, "model": model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def classify_json(table: np.ndarray, labels: Sequence[str], model: str, tokens: int) -> bytes:
    """Infinity's /classify answer: every label's score per input, highest first."""
    data = [sorted(({"score": score, "label": labels[i]} for i, score in enumerate(row)),
                   key=lambda prediction: -prediction["score"]) for row in table.tolist()]
    return dumps({"object": "classify", "data": data, "model": model, "id": str(uuid.uuid4()),
                  "created": int(time.time()), "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
