"""The server end to end: uvicorn in a subprocess on loopback, called with httpx and the official
openai client, as users call it. Faults come from tests/serve_doubles.py (a gate that holds a batch,
a poison id that makes the model raise), so every overload bound is structural: a request refused
while the only replica is provably held at the gate cannot have been computed."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time

import httpx
import numpy as np
import openai
import pytest
import torch

from neuron_encoder.embeddings import embed_texts
from neuron_encoder.runtime import load_compiled

from .conftest import cpu_precision
from .serve_doubles import GATE_ID, POISON_ID
from .serve_helpers import ServerProcess

# Served vectors against the same artifact's offline ones: batches are packed differently, which moves
# bf16 results by a few 1e-4 (fp32 ones by far less); a wrong vector is off by orders more.
ATOL = 2e-5 if cpu_precision() == "fp32" else 2e-3

TEXTS = ["A man is playing a guitar.", "Someone strums a guitar on stage.", "The stock market fell today.",
         "cheap flights to lisbon", "how do I reset my password"]
KEY = "test-key-123"


@pytest.fixture(scope="module")
def text_server(minilm_artifact, tmp_path_factory):
    """minilm with an API key, one JSON log line per request, small request limits."""
    server = ServerProcess(tmp_path_factory.mktemp("text-server"), artifact=str(minilm_artifact), api_key=KEY,
                           json_output=True, max_client_batch_size=8, payload_limit=20_000).start()
    yield server.wait_ready()
    assert server.stop() == 0, server.output()


@pytest.fixture(scope="module")
def fault_server(tiny_text_artifact, tmp_path_factory):
    """The tiny text model behind a gate and a poison id, with a 16-input queue."""
    server = ServerProcess(tmp_path_factory.mktemp("fault-server"), gate=True, artifact=str(tiny_text_artifact),
                           max_concurrent_requests=16, max_client_batch_size=16).start()
    yield server.wait_ready()
    assert server.stop() == 0, server.output()


@pytest.fixture(scope="module")
def reference(minilm_artifact):
    """What CompiledEncoder.embed gives for TEXTS: the numbers every route must return."""
    with load_compiled(minilm_artifact) as model:
        return embed_texts(model, TEXTS).numpy()


def test_every_route_returns_compiled_encoder_embeddings(text_server, reference):
    with text_server.client() as client:
        embed = client.post("/embed", json={"inputs": TEXTS})
        single = client.post("/embed", json={"inputs": TEXTS[0]})
        invocations = client.post("/invocations", json={"inputs": TEXTS})
        openai_float = client.post("/v1/embeddings", json={"input": TEXTS, "model": "minilm"})
        raw = client.post("/embed", json={"inputs": TEXTS, "normalize": False})
    for response in (embed, single, invocations, openai_float, raw):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        for header in ("x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"):
            assert float(response.headers[header]) >= 0
    np.testing.assert_allclose(np.array(embed.json()), reference, atol=ATOL)
    np.testing.assert_allclose(np.array(single.json()), reference[:1], atol=ATOL)
    np.testing.assert_allclose(np.array(invocations.json()), reference, atol=ATOL)
    body = openai_float.json()
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    assert all(d["object"] == "embedding" for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(TEXTS) * 2
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), reference, atol=ATOL)
    unnormalised = np.array(raw.json())
    assert not np.allclose(np.linalg.norm(unnormalised, axis=1), 1.0)  # minilm's pooled vectors are not unit
    np.testing.assert_allclose(unnormalised / np.linalg.norm(unnormalised, axis=1, keepdims=True), reference,
                               atol=ATOL)


def test_the_official_openai_client_works_unchanged(text_server, reference):
    client = openai.OpenAI(base_url=f"{text_server.url}/v1", api_key=KEY)
    result = client.embeddings.create(model="minilm", input=TEXTS)  # the client asks for base64
    np.testing.assert_allclose(np.array([d.embedding for d in result.data]), reference, atol=ATOL)
    assert result.model == "minilm" and result.usage.total_tokens > 0
    short = client.embeddings.create(model="minilm", input=TEXTS[0], dimensions=64, encoding_format="float")
    vector = np.array(short.data[0].embedding)
    expected = reference[0][:64] / np.linalg.norm(reference[0][:64])
    assert vector.shape == (64,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(vector, expected, atol=ATOL)
    assert [m.id for m in client.models.list().data] == ["minilm"]
    with pytest.raises(openai.UnprocessableEntityError) as error:
        client.embeddings.create(model="minilm", input="x", dimensions=1000)
    assert error.value.response.json() == {"error": "dimensions 1000 is more than the model's 384",
                                           "error_type": "Validation"}


def test_token_ids_and_base64(text_server, minilm_artifact):
    with load_compiled(minilm_artifact) as model:
        ids = model.tokenizer.token_ids([TEXTS[1]])[0]
        expected = model.embed(torch.tensor([ids])).numpy()[0]
    with text_server.client() as client:
        one = client.post("/v1/embeddings", json={"input": ids, "encoding_format": "base64"}).json()
        two = client.post("/v1/embeddings", json={"input": [ids, ids]}).json()
        bad = client.post("/v1/embeddings", json={"input": [[1, 2, 10 ** 6]]})
    decoded = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected, atol=ATOL)
    assert one["usage"]["prompt_tokens"] == len(ids) and two["usage"]["prompt_tokens"] == 2 * len(ids)
    assert bad.status_code == 422 and "outside the vocabulary" in bad.json()["error"]


def test_tokenize_info_and_models(text_server):
    with text_server.client() as client:
        tokens = client.post("/tokenize", json={"inputs": ["Hi there"]}).json()
        bare = client.post("/tokenize", json={"inputs": "Hi there", "add_special_tokens": False}).json()
        info = client.get("/info").json()
    assert [t["text"] for t in tokens[0]] == ["[CLS]", "Hi", "there", "[SEP]"]
    assert tokens[0][1] == {"id": 7632, "text": "Hi", "special": False, "start": 0, "stop": 2}
    assert [t["special"] for t in bare[0]] == [False, False]
    assert info["model_id"] == "minilm" and info["backend"] == "cpu" and info["model_dtype"] == cpu_precision()
    assert info["buckets"] == [[1, 16], [1, 32], [4, 16], [4, 32]] and info["max_input_length"] == 32
    assert info["replicas"] == 1 and info["max_client_batch_size"] == 8 and set(info["warm_up_ms"]) == {
        "b1_s16", "b1_s32", "b4_s16", "b4_s32"}


def test_api_key_on_every_route_but_ping_and_health(text_server):
    for path in ("/embed", "/invocations", "/v1/embeddings", "/tokenize"):
        response = httpx.post(f"{text_server.url}{path}", json={"inputs": "x", "input": "x"})
        assert response.status_code == 401, path
        assert response.json()["error_type"] == "Unauthorized" and response.headers["www-authenticate"] == "Bearer"
    for path in ("/info", "/metrics", "/v1/models", "/docs", "/openapi.json"):
        assert httpx.get(f"{text_server.url}{path}").status_code == 401, path
    wrong = httpx.post(f"{text_server.url}/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert httpx.get(f"{text_server.url}/ping").status_code == 200
    assert httpx.get(f"{text_server.url}/health").status_code == 200


@pytest.mark.parametrize("body, headers, status, words", [
    ({"inputs": ["x"] * 9}, {}, 413, "9 inputs in one request; at most 8"),
    ({"inputs": "word " * 100}, {}, 413, "102 tokens, more than the largest compiled bucket (32)"),
    ({"inputs": "x" * 30_000}, {}, 413, "limit of 20000 bytes"),
    ({"inputs": [], "normalize": True}, {}, 422, "cannot be empty"),
    ({"inputs": "x", "normalize": "yes"}, {}, 422, "normalize"),
    ({"inputs": "x", "colour": "red"}, {}, 422, "colour: Extra inputs are not permitted"),
    ({"inputs": 3}, {}, 422, "must be a text or a list of texts"),
    (b"not json", {"content-type": "application/json"}, 400, "not valid JSON"),
    (b'{"inputs": "x"}', {"content-type": "text/plain"}, 415, "send application/json"),
    (b'{"inputs": "x"}', {"content-type": ""}, 415, "send application/json"),
])
def test_bad_requests_get_a_clear_error_and_no_stack_trace(text_server, body, headers, status, words):
    with text_server.client() as client:
        for path in ("/embed", "/invocations"):
            if isinstance(body, bytes):
                response = client.post(path, content=body, headers=headers)
            else:
                response = client.post(path, json=body)
            assert response.status_code == status, (path, response.text)
            error = response.json()
            assert set(error) == {"error", "error_type"} and words in error["error"], error
            assert "Traceback" not in response.text
        assert client.get("/health").status_code == 200


def test_truncation_is_asked_for_or_automatic(text_server):
    with text_server.client() as client:
        long = "word " * 100
        right = client.post("/embed", json={"inputs": long, "truncate": True})
        left = client.post("/embed", json={"inputs": "start " + long, "truncate": True,
                                           "truncation_direction": "Left"})
        assert right.status_code == left.status_code == 200
        tokens = client.post("/v1/embeddings", json={"input": long})
        assert tokens.status_code == 413  # OpenAI's route never truncates silently


def test_json_log_lines_name_the_request_but_never_its_text(text_server):
    with text_server.client() as client:
        client.post("/embed", json={"inputs": ["a secret sentence nobody may log"]})
    time.sleep(0.2)
    lines = [json.loads(line) for line in text_server.output().splitlines() if line.startswith('{"time"')]
    embeds = [line for line in lines if line["route"] == "/embed" and line["status"] == 200]
    assert embeds and {"total_ms", "queue_ms", "inference_ms", "tokens", "inputs"} <= set(embeds[-1])
    assert "secret" not in text_server.output()


def test_concurrent_requests_are_merged_into_batches(fault_server):
    """Eight one-sentence requests wait behind a held batch; once it goes, they run as two batches of 4."""
    gate = fault_server.gate
    batches_before = fault_server.metric("neuron_encoder_batch_size_count")
    inputs_before = fault_server.metric("neuron_encoder_batch_size_sum")
    with fault_server.client() as client, concurrent.futures.ThreadPoolExecutor(9) as pool:
        gate.close()
        held = pool.submit(client.post, "/v1/embeddings", json={"input": [[101, GATE_ID, 102]]})
        gate.wait_until_holding()
        waiting = [pool.submit(client.post, "/embed", json={"inputs": "the same short sentence"})
                   for _ in range(8)]
        while fault_server.metric("neuron_encoder_queue_depth") < 8:
            time.sleep(0.01)
        gate.open()
        responses = [held.result()] + [future.result() for future in waiting]
    assert [r.status_code for r in responses] == [200] * 9
    assert fault_server.metric("neuron_encoder_batch_size_sum") - inputs_before == 9
    assert fault_server.metric("neuron_encoder_batch_size_count") - batches_before == 3  # 1 held + 2 x 4
    assert fault_server.metric("neuron_encoder_bucket_hits_total", 'batch="4",seq="16"') >= 2
    assert all(r.json() == responses[1].json() for r in responses[1:])


def test_a_full_queue_answers_429_at_once_and_loses_nothing(fault_server):
    gate = fault_server.gate
    with fault_server.client() as client, concurrent.futures.ThreadPoolExecutor(16) as pool:
        gate.close()
        held = pool.submit(client.post, "/v1/embeddings", json={"input": [[101, GATE_ID, 102]]})
        gate.wait_until_holding()
        admitted = [pool.submit(client.post, "/embed", json={"inputs": ["queued request"] * 5}) for _ in range(3)]
        while fault_server.metric("neuron_encoder_in_flight_inputs") < 16:
            time.sleep(0.01)
        refused = client.post("/embed", json={"inputs": "one more"})  # the replica is still held
        assert gate.path.with_suffix(".waiting").exists()
        gate.open()
        results = [held.result()] + [future.result() for future in admitted]
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error_type"] == "Overloaded" and "queue is full" in refused.json()["error"]
    assert [r.status_code for r in results] == [200] * 4 and all(len(r.json()) == 5 for r in results[1:])
    assert fault_server.metric("neuron_encoder_rejected_total", 'reason="queue_full"') >= 1


def test_a_backend_failure_fails_only_its_batch(fault_server):
    with fault_server.client() as client:
        failed = client.post("/v1/embeddings", json={"input": [[101, POISON_ID, 102]]})
        health = client.get("/health")
        after = client.post("/embed", json={"inputs": ["still working"]})
    assert failed.status_code == 424 and failed.json()["error_type"] == "Backend"
    assert "injected backend failure" in failed.json()["error"] and "Traceback" not in failed.text
    assert health.status_code == 200 and after.status_code == 200
    assert fault_server.metric("neuron_encoder_batch_failures_total") >= 1


def test_queue_timeout_is_503_and_not_computed(tiny_text_artifact, tmp_path):
    server = ServerProcess(tmp_path, gate=True, artifact=str(tiny_text_artifact), request_timeout_ms=300).start()
    try:
        server.wait_ready()
        with server.client() as client, concurrent.futures.ThreadPoolExecutor(2) as pool:
            server.gate.close()
            held = pool.submit(client.post, "/v1/embeddings", json={"input": [[101, GATE_ID, 102]]})
            server.gate.wait_until_holding()
            computed_before = server.metric("neuron_encoder_batch_size_sum")
            late = client.post("/embed", json={"inputs": ["waits behind the held batch"]})
            assert server.gate.path.with_suffix(".waiting").exists()  # answered while the replica is held
            server.gate.open()
            assert held.result().status_code == 200
        assert late.status_code == 503 and late.json()["error_type"] == "Overloaded"
        assert "--request-timeout-ms" in late.json()["error"]
        assert server.metric("neuron_encoder_batch_size_sum") == computed_before + 1  # only the held one ran
        assert server.metric("neuron_encoder_rejected_total", 'reason="queue_timeout"') == 1
    finally:
        assert server.stop() == 0, server.output()


def test_sigterm_drains_every_accepted_request_and_exits_0(tiny_text_artifact, tmp_path):
    server = ServerProcess(tmp_path, gate=True, artifact=str(tiny_text_artifact), graceful_timeout=60).start()
    server.wait_ready()
    with server.client() as client, concurrent.futures.ThreadPoolExecutor(21) as pool:
        server.gate.close()
        held = pool.submit(client.post, "/v1/embeddings", json={"input": [[101, GATE_ID, 102]]})
        server.gate.wait_until_holding()
        accepted = [pool.submit(client.post, "/embed", json={"inputs": [f"request {i}", "second input"]})
                    for i in range(20)]
        while server.metric("neuron_encoder_in_flight_inputs") < 41:
            time.sleep(0.01)
        server.terminate()
        deadline = time.monotonic() + 30
        while client.get("/ping").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = client.post("/embed", json={"inputs": "too late"})
        server.gate.open()
        results = [held.result()] + [future.result() for future in accepted]
    assert refused.status_code == 503 and refused.json()["error_type"] == "Unhealthy"
    assert [r.status_code for r in results] == [200] * 21 and all(len(r.json()) == 2 for r in results[1:])
    assert server.process.wait(60) == 0, server.output()


ROUTES = {"/embed": "EmbedRequest", "/invocations": "InvocationRequest", "/v1/embeddings": "OpenAIEmbeddingRequest",
          "/tokenize": "TokenizeRequest"}
FUZZ_EXAMPLES = 2000


def from_schema(schema: dict, components: dict):
    """A hypothesis strategy for the JSON values an OpenAPI schema accepts (the subset our request models
    use: $ref, anyOf, enum, const, objects, arrays, strings, integers, booleans, null)."""
    from hypothesis import strategies as st
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components))
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of(*[from_schema(option, components) for option in schema.get("anyOf", schema.get("oneOf"))])
    if "enum" in schema or "const" in schema:
        return st.sampled_from(schema.get("enum", [schema.get("const")]))
    kind = schema.get("type")
    if kind == "object":
        properties = {name: from_schema(sub, components) for name, sub in schema.get("properties", {}).items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries({name: properties[name] for name in required},
                                     optional={name: s for name, s in properties.items() if name not in required})
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components), max_size=6)
    if kind == "string":
        return st.text(max_size=80)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum")) | st.integers(0, 30521)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise AssertionError(f"schema form not covered: {schema}")


def _bodies(document: dict):
    """(route, body bytes, content type): bodies valid against the route's OpenAPI request schema,
    any JSON at all, or any bytes, under the right or a wrong content type."""
    from hypothesis import strategies as st
    components = document["components"]["schemas"]
    valid = st.one_of(*[from_schema({"$ref": f"#/components/schemas/{name}"}, components).map(
        lambda body, route=route: (route, body)) for route, name in ROUTES.items()])
    anything = st.tuples(st.sampled_from(sorted(ROUTES)), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
        max_leaves=12))
    as_json = st.one_of(valid, valid, anything).map(lambda pair: (pair[0], json.dumps(pair[1]).encode()))
    raw = st.tuples(st.sampled_from(sorted(ROUTES)), st.binary(max_size=200))
    content_type = st.sampled_from(["application/json"] * 8 + ["application/json; charset=utf-8", "text/plain", ""])
    return st.tuples(st.one_of(as_json, as_json, as_json, raw), content_type).map(
        lambda item: (item[0][0], item[0][1], item[1]))


def test_thousands_of_generated_bodies_give_no_5xx_and_the_server_stays_healthy(fault_server):
    from hypothesis import HealthCheck, given, settings
    with fault_server.client() as client:
        document = client.get("/openapi.json").json()
        expected = client.post("/embed", json={"inputs": ["a fixed sentence"]}).json()
        statuses: dict[int, int] = {}

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(_bodies(document))
        def check(case):
            route, body, content_type = case
            response = client.post(route, content=body, headers={"content-type": content_type})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (route, body[:200], response.text)
            if response.status_code != 200:
                assert set(response.json()) == {"error", "error_type"}, response.text

        check()
        assert sum(statuses.values()) >= FUZZ_EXAMPLES
        assert statuses.get(200, 0) > FUZZ_EXAMPLES // 10 and statuses.get(422, 0) > 0, statuses  # both kinds ran
        assert client.get("/health").status_code == 200
        assert client.post("/embed", json={"inputs": ["a fixed sentence"]}).json() == expected
