"""The scoring routes end to end: random task checkpoints of five families (as test_classification builds
them) served with `serve --model DIR` and with a compiled artifact (`--artifact`), both fp32 (`--auto-cast
none`), answer /predict as transformers' text-classification pipeline, /rerank and /v1/rerank as
sentence-transformers' CrossEncoder.predict, and /invocations as the route of their task; the other task's
routes are a 424."""

from __future__ import annotations

import httpx
import pytest
import torch

from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model

from .families import CORPUS
from .serve_helpers import ThreadServer
from .test_classification import CHECKPOINTS, DOCUMENTS, PAIRS, QUERY, SINGLES, as_table
from .test_classification import checkpoint, theirs  # noqa: F401 - the same checkpoints, fixtures of this module too

transformers = pytest.importorskip("transformers")

FP32 = CompileOptions(auto_cast="none")  # parity is about exactness: fp32 whatever the run's policy
SHAPES = {"batch_sizes": "1,2", "seq_lens": "16,32,64"}
TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    """The checkpoint compiled for the CPU in fp32, as `neuron-encoder compile --auto-cast none` does."""
    family, directory = checkpoint
    out = tmp_path_factory.mktemp("artifact") / family
    compile_model(str(directory), backend="cpu", options=FP32, out=out, progress=lambda line: None, **SHAPES)
    return out


@pytest.fixture(scope="module", params=["model", "artifact"])
def server(request, checkpoint, tmp_path_factory):
    """`serve --model DIR` (compiled on start) or `serve --artifact OUT`, both fp32."""
    family, directory = checkpoint
    if request.param == "model":
        settings = {"model": str(directory), "artifacts_dir": str(tmp_path_factory.mktemp("artifacts"))}
    else:
        settings = {"artifact": str(request.getfixturevalue("artifact"))}
    with ThreadServer(backend="cpu", compile_options=FP32, max_client_batch_size=8, **SHAPES, **settings) as running:
        with httpx.Client(base_url=running.url, timeout=120) as client:
            yield client


def close(ours: list, expected: list) -> None:
    assert [[p["label"] for p in row] for row in ours] == [[p["label"] for p in row] for row in expected]
    for got, want in zip(as_table(ours), as_table(expected)):
        assert got.keys() == want.keys()
        assert max(abs(got[label] - want[label]) for label in got) <= TOLERANCE


def post(client, path, body, status=200):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_predict_equals_the_text_classification_pipeline(server, theirs):
    _, _, pipe = theirs
    close(post(server, "/predict", {"inputs": SINGLES}), pipe(SINGLES))
    close(post(server, "/predict", {"inputs": [list(pair) for pair in PAIRS]}),
          pipe([{"text": a, "text_pair": b} for a, b in PAIRS]))
    close([post(server, "/predict", {"inputs": SINGLES[0]})], pipe(SINGLES[:1]))  # one text: one list
    close([post(server, "/predict", {"inputs": list(PAIRS[0])})],  # [a, b]: one pair
          pipe([{"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}]))
    infinity = post(server, "/classify", {"input": SINGLES, "model": "m"})
    assert infinity["object"] == "classify" and infinity["usage"]["total_tokens"] > 0
    close(infinity["data"], pipe(SINGLES))
    mixed = post(server, "/predict", {"inputs": [[SINGLES[1]], list(PAIRS[1])]})
    close(mixed, pipe([SINGLES[1], {"text": PAIRS[1][0], "text_pair": PAIRS[1][1]}]))


def test_raw_scores_are_the_logits(server, theirs):
    model, tokenizer, _ = theirs
    ours = post(server, "/predict", {"inputs": [list(pair) for pair in PAIRS], "raw_scores": True})
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    for row, expected in zip(ours, logits.tolist()):
        got = {p["label"]: p["score"] for p in row}
        assert max(abs(got[model.config.id2label[i]] - value) for i, value in enumerate(expected)) <= TOLERANCE


def test_rerank_equals_cross_encoder_predict(server, checkpoint):
    family, directory = checkpoint
    if CHECKPOINTS[family][1] != 1:  # a classifier: the reranking routes are a 424, as TEI's
        for path, body in (("/rerank", {"query": QUERY, "texts": DOCUMENTS}),
                           ("/v1/rerank", {"query": QUERY, "documents": DOCUMENTS})):
            assert post(server, path, body, 424)["error_type"] == "Backend"
        return
    from sentence_transformers import CrossEncoder
    expected = [float(s) for s in CrossEncoder(str(directory), device="cpu").predict([(QUERY, t) for t in DOCUMENTS])]
    order = sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])
    results = post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert [r["index"] for r in results] == order
    assert max(abs(r["score"] - expected[r["index"]]) for r in results) <= TOLERANCE
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in results)
    assert "text" not in post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS})[0]
    raw = post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})
    logits = {i: float(torch.logit(torch.tensor(expected[i], dtype=torch.float64))) for i in order}
    assert max(abs(r["score"] - logits[r["index"]]) for r in raw) <= 2e-3
    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, *DOCUMENTS[2:]]
    cohere = post(server, "/v1/rerank", {"model": "x", "query": QUERY, "documents": documents, "top_n": 2,
                                         "return_documents": True})
    assert [r["index"] for r in cohere["results"]] == order[:2] and cohere["usage"]["total_tokens"] > 0
    assert max(abs(r["relevance_score"] - expected[r["index"]]) for r in cohere["results"]) <= TOLERANCE
    assert [r["document"]["text"] for r in cohere["results"]] == [DOCUMENTS[i] for i in order[:2]]
    assert post(server, "/invocations", {"query": QUERY, "texts": DOCUMENTS}) == \
        post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS})


def test_routes_follow_the_task(server, checkpoint, theirs):
    """/info names the task and its labels; /invocations is the task's route; the embedding routes are a 424."""
    family, _ = checkpoint
    model = theirs[0]
    kind = "reranker" if CHECKPOINTS[family][1] == 1 else "classifier"
    info = server.get("/info").json()
    labels = {str(i): label for i, label in model.config.id2label.items()}
    assert info["model_type"] == {kind: {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}}
    if kind == "classifier":
        assert post(server, "/invocations", {"inputs": SINGLES}) == post(server, "/predict", {"inputs": SINGLES})
    for path, body in (("/embed", {"inputs": "a"}), ("/v1/embeddings", {"input": "a"})):
        error = post(server, path, body, 424)
        assert error["error_type"] == "Backend" and "/predict" in error["error"]
    assert server.get("/health").status_code == 200
    assert post(server, "/predict", {"inputs": SINGLES * 3}, 413)["error_type"] == "Validation"  # over 8 inputs


def test_a_long_text_keeps_the_whole_query_and_truncate_false_is_a_413(server, checkpoint):
    family, directory = checkpoint
    if CHECKPOINTS[family][1] != 1:
        return
    long_text = " ".join(CORPUS) * 4
    from neuron_encoder.classification import rerank
    from neuron_encoder.models import load_model
    expected = rerank(load_model(directory), "a lazy dog", [long_text])[0]["score"]  # only_second, as the library
    assert post(server, "/rerank", {"query": "a lazy dog", "texts": [long_text], "truncate": True})[0]["score"] == \
        pytest.approx(expected, abs=TOLERANCE)
    error = post(server, "/rerank", {"query": "a lazy dog", "texts": [long_text], "truncate": False}, 413)
    assert error["error_type"] == "Validation" and "more than the limit" in error["error"]
    error = post(server, "/rerank", {"query": long_text, "texts": ["a text"], "truncate": True}, 413)
    assert "shorten the query" in error["error"]


def test_the_sagemaker_handler_answers_as_the_server(server, checkpoint, artifact):
    """deploy/sagemaker/inference.py on the artifact: /invocations' answers, and its errors, as the server's."""
    from .test_deploy_inference import call, load_handlers
    family, _ = checkpoint
    handlers = load_handlers()
    model = handlers.model_fn(str(artifact))
    if CHECKPOINTS[family][1] == 1:
        bodies = [{"query": QUERY, "texts": DOCUMENTS, "return_text": True}, {"query": QUERY, "texts": DOCUMENTS,
                                                                              "raw_scores": True}]
    else:
        bodies = [{"inputs": SINGLES}, {"inputs": list(PAIRS[0]), "raw_scores": True}, {"inputs": SINGLES[0]}]
    for body in bodies:
        answer, status = call(handlers, model, body)
        expected = post(server, "/invocations", body)
        assert status is None and json_close(answer, expected)
    long_text = " ".join(CORPUS) * 4
    bad = {"query": QUERY, "texts": [long_text]} if CHECKPOINTS[family][1] == 1 else {"inputs": [long_text]}
    answer, status = call(handlers, model, bad)
    assert status == (413, "Validation") and answer["error_type"] == "Validation"
    answer, status = call(handlers, model, {**bad, "nonsense": 1})
    assert status == (422, "Validation") and answer == post(server, "/invocations", {**bad, "nonsense": 1}, 422)


def json_close(got, expected) -> bool:
    """The same JSON, numbers within fp32 rounding (the handler and the server batch differently)."""
    if isinstance(got, list):
        return len(got) == len(expected) and all(json_close(a, b) for a, b in zip(got, expected))
    if isinstance(got, dict):
        return got.keys() == expected.keys() and all(json_close(got[k], expected[k]) for k in got)
    if isinstance(got, float):
        return abs(got - expected) <= 1e-5
    return got == expected


def test_an_embedder_refuses_the_scoring_routes(tiny_text_artifact):
    """The other way round: an embedder's server answers the scoring routes 424, naming the routes that fit."""
    with ThreadServer(artifact=str(tiny_text_artifact)) as running, httpx.Client(base_url=running.url) as client:
        assert list(client.get("/info").json()["model_type"]) == ["embedding"]
        for path, body in (("/predict", {"inputs": "a"}), ("/rerank", {"query": "a", "texts": ["b"]}),
                           ("/v1/rerank", {"query": "a", "documents": ["b"]})):
            error = post(client, path, body, 424)
            assert error["error_type"] == "Backend" and "/embed" in error["error"]
        assert len(post(client, "/invocations", {"inputs": ["a", "b"]})) == 2


BODIES = [  # (route, body): the plain parsers (scores.py) and the OpenAPI models (schemas.py) agree on each
    ("/predict", {"inputs": "a"}), ("/predict", {"inputs": ["a", "b"]}),
    ("/predict", {"inputs": [["a"], ["a", "b"], "c"]}),
    ("/predict", {"inputs": "a", "raw_scores": True, "truncate": None, "truncation_direction": "Left"}),
    ("/predict", {"inputs": 1}), ("/predict", {"inputs": "a", "raw_scores": 1}), ("/predict", {"inputs": "a", "x": 1}),
    ("/predict", {"inputs": "a", "truncation_direction": "up"}), ("/predict", {}),
    ("/rerank", {"query": "q", "texts": ["a"], "return_text": True}), ("/rerank", {"query": "q", "texts": "a"}),
    ("/rerank", {"query": 1, "texts": ["a"]}), ("/rerank", {"texts": ["a"]}),
    ("/v1/rerank", {"query": "q", "documents": ["a", {"text": "b"}], "top_n": 1, "model": "m"}),
    ("/v1/rerank", {"query": "q", "documents": [{"txt": "b"}]}),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "return_documents": "yes"}),
    ("/classify", {"input": ["a", "b"], "model": "m", "raw_scores": True}), ("/classify", {"input": [["a", "b"]]}),
]


@pytest.mark.parametrize("route, body", BODIES)
def test_the_plain_parsers_accept_what_the_openapi_models_accept(route, body):
    from pydantic import ValidationError
    from neuron_encoder.serve import errors, schemas, scores
    parse, model = {"/predict": (scores.parse_predict, schemas.PredictRequest),
                    "/rerank": (scores.parse_rerank, schemas.RerankRequest),
                    "/v1/rerank": (scores.parse_cohere_rerank, schemas.CohereRerankRequest),
                    "/classify": (scores.parse_classify, schemas.ClassifyRequest)}[route]
    try:
        model.model_validate(body)
        valid = True
    except ValidationError:
        valid = False
    try:
        parse(body, 8)
        parsed = True
    except errors.Validation:
        parsed = False
    assert parsed == valid
