"""Embedding endpoints as benchmark engines: the same timed loop, corpus, statistics and result file as
the device engines, so one report shows a model on the device beside the same model behind HTTP.

    http-openai      POST URL/v1/embeddings {"input": [...], "encoding_format": "base64"} (ours, Infinity,
                     TEI, OpenAI-compatible servers), as the official client sends it
    http-tei         POST URL/embed {"inputs": [...]} (ours, text-embeddings-inference)
    http-sagemaker   POST URL/invocations {"inputs": [...]} (ours, a SageMaker container run locally)
    sagemaker-endpoint   a deployed SageMaker endpoint by name, through boto3's sagemaker-runtime
                     invoke_endpoint (the same JSON as http-sagemaker)

A workload batch of B rows is one request of B inputs: the text of each row (its token ids decoded
with the model's tokenizer, special tokens left out; a model without a tokenizer sends token ids,
which only the OpenAI route takes). run() returns the pooled embeddings (B, H), which the accuracy
check compares with the CPU fp32 eager reference by cosine, so a wrong model behind the URL shows.

A classifier or reranker is timed on its scoring route instead: http-tei POSTs URL/predict and
http-sagemaker URL/invocations (a classifier's: /predict's body) {"inputs": [[text] | [a, b], ...],
"raw_scores": true}, a reranker's rows split back into their (query, text) pairs, and run() returns the
logits (B, L) in label order, which the accuracy check compares with the reference's.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.parse
from typing import Any, Callable

import numpy as np
import torch

from neuron_encoder.bench.checks import choice
from neuron_encoder.bench.engines import Engine
from neuron_encoder.errors import ConfigError
from neuron_encoder.task import EMBEDDING, Task
from neuron_encoder.text import Tokenizer

ENDPOINT_KINDS = ("openai", "tei", "sagemaker")
ROUTES = {"openai": "/v1/embeddings", "tei": "/embed", "sagemaker": "/invocations"}
TIMEOUT_S = 120.0

try:
    import orjson
    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with the serve extra
    _loads = json.loads


class _Bodies:
    """The request body of each workload batch, built once (decoding takes longer than the call's own
    bookkeeping). Keyed by the input tensor itself: the loop passes the workload's own tensors, and the
    cache holds them, so an id is never reused by another tensor."""

    def __init__(self, kind: str, tokenizer: Tokenizer | None, model: str | None, task: Task = EMBEDDING) -> None:
        if tokenizer is None and kind != "openai":
            raise ConfigError(f"a {kind} endpoint takes text, and this model has no tokenizer (random weights): "
                              "benchmark it with --endpoint-kind openai (token ids) or use a real checkpoint")
        if task.kind != "embedding" and (tokenizer is None or kind == "openai"
                                         or (kind, task.kind) == ("sagemaker", "reranker")):
            raise ConfigError(f"a {task.kind} is timed on its scoring route: --endpoint-kind tei (/predict)"
                              + (" or sagemaker (/invocations)" if task.kind == "classifier" else "")
                              + ", with the checkpoint's tokenizer")
        self.kind, self.tokenizer, self.model, self.task = kind, tokenizer, model, task
        self._cache: dict[int, tuple[torch.Tensor, bytes]] = {}
        self._lock = threading.Lock()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bytes:
        cached = self._cache.get(id(input_ids))
        if cached is not None and cached[0] is input_ids:
            return cached[1]
        body = self._build(input_ids, attention_mask)
        with self._lock:
            self._cache[id(input_ids)] = (input_ids, body)
        return body

    def _build(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bytes:
        rows = [ids[:int(length)].tolist() for ids, length in zip(input_ids, attention_mask.sum(1))]
        if self.task.kind != "embedding":  # /predict's body: [text] or a pair [a, b] each, the logits back
            return json.dumps({"inputs": [self._sequence(ids) for ids in rows], "truncate": True,
                               "raw_scores": True}).encode()
        inputs: list = [self.tokenizer.decode(ids) for ids in rows] if self.tokenizer is not None else rows
        if self.kind == "openai":
            body: dict[str, Any] = {"input": inputs, "encoding_format": "base64"}
            if self.model:
                body["model"] = self.model
        else:
            body = {"inputs": inputs, "truncate": True}
        return json.dumps(body).encode()


    def _sequence(self, ids: list[int]) -> list[str]:
        """A row's text as [text], or a reranker's pair as [query, text]: the row's closing special token
        ([SEP], </s>) first closes the query in every pair template."""
        if self.task.kind == "reranker" and len(ids) > 2 and ids[-1] in ids[1:-1]:
            end = ids.index(ids[-1], 1)
            return [self.tokenizer.decode(ids[:end]), self.tokenizer.decode(ids[end:])]
        return [self.tokenizer.decode(ids)]


def parse_logits(data: bytes, task: Task) -> torch.Tensor:
    """(B, L) logits in label order from /predict's answer with raw_scores: per input, [{"score", "label"}]."""
    order = task.label2id
    table = np.zeros((0, len(order)), dtype=np.float32)
    rows = []
    for predictions in _loads(data):
        row = np.empty(len(order), dtype=np.float32)
        for prediction in predictions:
            row[order[prediction["label"]]] = prediction["score"]
        rows.append(row)
    return torch.from_numpy(np.stack(rows) if rows else table)


def parse_embeddings(kind: str, data: bytes) -> torch.Tensor:
    """(B, H) float32 from an endpoint's answer: OpenAI's data list (float or base64), or a list of lists."""
    body = _loads(data)
    if kind == "openai":
        rows = sorted(body["data"], key=lambda item: item["index"])
        vectors = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
                   if isinstance(item["embedding"], str) else np.asarray(item["embedding"], dtype=np.float32)
                   for item in rows]
        return torch.from_numpy(np.stack(vectors))
    return torch.tensor(body, dtype=torch.float32)


class _Connections:
    """One keep-alive HTTP connection per calling thread (http.client: the lightest client, so the load
    generator leaves the most CPU to the server it shares a host with)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"endpoint {url!r} is not an http(s):// URL")
        self.https, self.host, self.port = parts.scheme == "https", parts.hostname, parts.port
        self.base = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        if fresh or getattr(self._local, "connection", None) is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._local.connection = kind(self.host, self.port, timeout=self.timeout_s)
        return self._local.connection

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a keep-alive connection the server closed is reopened once
            connection = self._connection(fresh=attempt == 1)
            try:
                connection.request(method, self.base + path, body=body, headers=headers or {})
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _route(base: str, kind: str, task: Task = EMBEDDING) -> str:
    """The route to POST to: the kind's own (a scorer's: /predict on TEI), unless the URL names a route
    already (Infinity serves OpenAI's at /embeddings), or ends in OpenAI's /v1."""
    if base.endswith(("/embeddings", "/embed", "/invocations", "/predict")):
        return ""
    if task.kind != "embedding" and kind == "tei":
        return "/predict"
    return "/embeddings" if kind == "openai" and base.endswith("/v1") else ROUTES[kind]


def http_engine(url: str, kind: str = "openai", tokenizer: Tokenizer | None = None, *, model: str | None = None,
                api_key: str | None = None, name: str | None = None, timeout_s: float = TIMEOUT_S,
                task: Task = EMBEDDING) -> Engine:
    """An HTTP endpoint as an Engine; GET /info (ours, TEI) names its precision and replicas when it answers."""
    choice("endpoint kind", kind, ENDPOINT_KINDS)
    connections = _Connections(url, timeout_s)
    bodies, path = _Bodies(kind, tokenizer, model, task), _route(connections.base, kind, task)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def run(input_ids, attention_mask, token_type_ids=None):
        status, data = connections.request("POST", path, bodies(input_ids, attention_mask), headers)
        if status != 200:
            raise RuntimeError(f"HTTP {status} from {url}: {data[:200].decode(errors='replace')}")
        return parse_embeddings(kind, data) if task.kind == "embedding" else parse_logits(data, task)

    info = _info(connections, headers)
    replicas = info.get("replicas") or 1
    label = (f"{kind} endpoint {url}, one request per batch, text decoded from the workload's tokens"
             + (f"; {info.get('replica_plan') or str(replicas) + ' replica(s)'} ({info.get('backend')})"
                if info else ""))
    return Engine(name or f"http-{kind}", str(info.get("model_dtype") or "unknown"), "http", int(replicas), run,
                  label=label)


def _info(connections: _Connections, headers: dict[str, str]) -> dict:
    """The server's GET /info when it has one (ours, TEI); {} when not."""
    try:
        status, data = connections.request("GET", "/info", headers={k: v for k, v in headers.items()
                                                                    if k == "Authorization"})
        return _loads(data) if status == 200 else {}
    except (OSError, ValueError, http.client.HTTPException):
        return {}


def sagemaker_engine(endpoint_name: str, tokenizer: Tokenizer | None = None, *, region: str | None = None,
                     client: Any = None, name: str = "sagemaker-endpoint", task: Task = EMBEDDING) -> Engine:
    """A deployed SageMaker endpoint through boto3's sagemaker-runtime invoke_endpoint (one client, made
    once with the region; pass `client` to use your own, e.g. a botocore Stubber's)."""
    if client is None:
        try:
            import boto3
        except ImportError:
            raise ConfigError("benchmarking a SageMaker endpoint needs boto3: pip install neuron-encoder[aws]") from None
        client = boto3.client("sagemaker-runtime", region_name=region)
    bodies = _Bodies("sagemaker", tokenizer, None, task)

    def run(input_ids, attention_mask, token_type_ids=None):
        response = client.invoke_endpoint(EndpointName=endpoint_name, ContentType="application/json",
                                          Accept="application/json", Body=bodies(input_ids, attention_mask))
        data = response["Body"].read()
        return parse_embeddings("sagemaker", data) if task.kind == "embedding" else parse_logits(data, task)

    return Engine(name, "unknown", "http", 1, run, label=f"SageMaker endpoint {endpoint_name} (invoke_endpoint)")


def endpoint_engines(endpoints: list[str], kind: str, tokenizer: Tokenizer | None, model: str | None = None,
                     api_key: str | None = None, region: str | None = None, task: Task = EMBEDDING) -> list[Engine]:
    """One engine per endpoint: a URL is HTTP of `kind`; a bare name with kind sagemaker is a SageMaker
    endpoint. Names stay unique (http-openai, http-openai-2, ...) so report rows do not merge."""
    engines, seen = [], {}
    for endpoint in endpoints:
        is_url = endpoint.startswith(("http://", "https://"))
        if not is_url and kind != "sagemaker":
            raise ConfigError(f"endpoint {endpoint!r} is not an http(s):// URL (a SageMaker endpoint name needs "
                              "--endpoint-kind sagemaker)")
        base = f"http-{kind}" if is_url else "sagemaker-endpoint"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        engines.append(http_engine(endpoint, kind, tokenizer, model=model, api_key=api_key, name=name, task=task)
                       if is_url else sagemaker_engine(endpoint, tokenizer, region=region, name=name, task=task))
    return engines
