"""The FastAPI app in-process (TestClient runs its lifespan): readiness, the OpenAPI document, CORS,
unexpected errors, and the Neuron path, one replica per NeuronCore, through tests/neuron_double.py.
The same app over real sockets is tests/test_serve_e2e.py."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import ArtifactError
from neuron_encoder.serve import replicas as serve_replicas
from neuron_encoder.serve.app import create_app
from neuron_encoder.serve.settings import ServeSettings



def wait_for(client: TestClient, path: str = "/ping", status: int = 200, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while (response := client.get(path)).status_code != status:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.02)
    return response


def test_503_while_loading_then_200(tiny_text_artifact, monkeypatch):
    release = threading.Event()
    real_path = serve_replicas.ArtifactSource.path
    monkeypatch.setattr(serve_replicas.ArtifactSource, "path", lambda self: release.wait() and real_path(self))
    with TestClient(create_app(ServeSettings(artifact=str(tiny_text_artifact)))) as client:
        for path in ("/ping", "/health", "/info"):
            response = client.get(path)
            assert response.status_code == 503 and response.json() == {
                "error": "the model is loading; retry soon", "error_type": "Unhealthy"}
        assert client.post("/embed", json={"inputs": "x"}).status_code == 503
        release.set()
        wait_for(client)
        assert client.post("/embed", json={"inputs": "x"}).status_code == 200


def test_a_missing_artifact_fails_before_serving(tmp_path):
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        create_app(ServeSettings(artifact=str(tmp_path)))


def test_a_failed_load_is_fatal_and_said(tiny_text_artifact, monkeypatch):
    def broken(self):
        raise ArtifactError("the disk is gone")
    monkeypatch.setattr(serve_replicas.ArtifactSource, "path", broken)
    app = create_app(ServeSettings(artifact=str(tiny_text_artifact)))
    service = app.state.service
    stopped = threading.Event()
    service.on_fatal = stopped.set
    with TestClient(app) as client:
        assert stopped.wait(60)
        assert isinstance(service.fatal, ArtifactError)
        assert client.get("/ping").json() == {"error": "the model failed to load (ArtifactError); the server is "
                                                       "stopping", "error_type": "Unhealthy"}


def test_openapi_documents_every_route_and_body(tiny_text_artifact):
    with TestClient(create_app(ServeSettings(artifact=str(tiny_text_artifact)))) as client:
        document = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    paths = document["paths"]
    for path in ("/ping", "/health", "/invocations", "/v1/embeddings", "/v1/models", "/embed", "/tokenize",
                 "/info", "/metrics"):
        assert path in paths, path
    schemas = document["components"]["schemas"]
    for name in ("EmbedRequest", "OpenAIEmbeddingRequest", "TokenizeRequest", "InvocationRequest", "ErrorBody",
                 "OpenAIEmbeddingResponse"):
        assert name in schemas, name
    body = paths["/embed"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EmbedRequest"}
    assert {"413", "415", "422", "424", "429", "503"} <= set(paths["/embed"]["post"]["responses"])


def test_no_cors_unless_asked(tiny_text_artifact):
    origin = {"Origin": "https://example.com"}
    with TestClient(create_app(ServeSettings(artifact=str(tiny_text_artifact)))) as client:
        assert "access-control-allow-origin" not in client.get("/metrics", headers=origin).headers
    settings = ServeSettings(artifact=str(tiny_text_artifact), cors_allow_origin=("https://example.com",))
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics", headers=origin).headers["access-control-allow-origin"] == "https://example.com"


def test_body_routes_go_straight_to_the_asgi_layer_unless_cors(tiny_text_artifact):
    app = create_app(ServeSettings(artifact=str(tiny_text_artifact)))
    assert set(app.shortcut.posts) == {"/embed", "/tokenize", "/invocations", "/v1/embeddings",  # every body route,
                                       "/predict", "/rerank", "/v1/rerank", "/classify"}  # the scoring ones too
    settings = ServeSettings(artifact=str(tiny_text_artifact), cors_allow_origin=("https://example.com",))
    app = create_app(settings)
    assert app.shortcut is None  # CORS must see every request
    with TestClient(app) as client:
        wait_for(client)
        response = client.post("/embed", json={"inputs": "x"}, headers={"Origin": "https://example.com"})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "https://example.com"


def test_an_unexpected_error_is_a_500_without_internals(tiny_text_artifact, monkeypatch):
    from neuron_encoder.serve import infer
    monkeypatch.setattr(infer.Inference, "embed_texts", lambda *args, **kwargs: {}["internal detail"])
    with TestClient(create_app(ServeSettings(artifact=str(tiny_text_artifact))), raise_server_exceptions=False) as client:
        wait_for(client)
        response = client.post("/embed", json={"inputs": "x"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the server log has the details", "error_type": "Backend"}


def test_on_inf2_one_replica_per_core_each_fed_without_waiting(inf2_host, tiny_model, tmp_path):
    """Two requests run at the same moment, one per NeuronCore: each replica's batch waits at a barrier
    that only opens when the other replica is inside a batch too."""
    out = compile_model(tiny_model, batch_sizes="1,4", seq_lens="16", backend="neuron",
                        options=CompileOptions(target="inf2", auto_cast="none"), out=tmp_path / "art").path
    both_busy = threading.Barrier(2, timeout=30)
    measuring = threading.Event()

    def run(model, rows):
        if measuring.is_set():
            both_busy.wait()
        return serve_replicas.run_batch(model, rows)

    app = create_app(ServeSettings(artifact=str(out), max_batch_requests=1), run=run)
    with TestClient(app) as client:
        info = wait_for(client, "/info").json()
        assert info["backend"] == "neuron" and info["replicas"] == 2
        assert info["placement"] == ["replica 0: NeuronCore 0", "replica 1: NeuronCore 1"]
        inf2_host.double.executions.clear()
        measuring.set()
        ids = {"input": [[101, 200, 300, 102]]}
        threads = [threading.Thread(target=lambda: results.append(client.post("/v1/embeddings", json=ids)))
                   for _ in range(2)]
        results: list = []
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [r.status_code for r in results] == [200, 200]
    assert results[0].json()["data"] == results[1].json()["data"]
    assert sorted(e.core for e in inf2_host.double.executions) == [0, 1]
