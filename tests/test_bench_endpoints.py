"""Endpoints as benchmark engines: our server on loopback through every kind, closed and open loop,
into the same result file as device rows; a SageMaker endpoint through boto3 with botocore's Stubber."""

from __future__ import annotations

import base64
import io
import json

import boto3
import numpy as np
import pytest
import torch
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from neuron_encoder.bench.api import run_bench
from neuron_encoder.bench.endpoints import endpoint_engines, http_engine, parse_embeddings, sagemaker_engine
from neuron_encoder.bench.workload import make_workload
from neuron_encoder.errors import BenchmarkFailed, ConfigError

from .conftest import cpu_precision, tiny_text_model
from .serve_helpers import ThreadServer


@pytest.fixture(scope="module")
def server(tiny_text_artifact):
    with ThreadServer(artifact=str(tiny_text_artifact)) as running:
        yield running


def test_one_result_holds_device_rows_and_every_endpoint_kind(server, tmp_path):
    model = tiny_text_model()
    result, path = run_bench(model, engines="cpu-eager", batch_sizes=[1, 4], seq_lens=[16], concurrency=[1, 2],
                             rates=[50], duration_s=0.3, warmup=1, out_dir=tmp_path, progress=None,
                             endpoints=[server.url, f"{server.url}/v1"], endpoint_kind="openai")
    engines = {row.engine for row in result.rows}
    assert engines == {"cpu-eager", "http-openai", "http-openai-2"}
    http_rows = [row for row in result.rows if row.engine == "http-openai"]
    assert {(row.batch_size, row.mode) for row in http_rows} == {(1, "closed"), (4, "closed"), (1, "open"),
                                                                  (4, "open")}
    for row in http_rows:
        assert row.errors == 0 and row.calls > 0 and row.precision == cpu_precision() and row.cores == 1
        assert row.accuracy_cosine_min > 0.999  # the server computes what eager fp32 does
        assert "openai endpoint" in row.label and row.threads_per_worker is None
    saved = json.loads(path.read_text())
    assert {r["engine"] for r in saved["rows"]} == engines and server.url in saved["command"]
    for kind in ("tei", "sagemaker"):
        result, _ = run_bench(model, engines=[], batch_sizes=[2], seq_lens=[16], concurrency=[1], duration_s=0.2,
                              warmup=1, out_dir=tmp_path, progress=None, endpoints=[server.url], endpoint_kind=kind)
        (row,) = result.rows
        assert row.engine == f"http-{kind}" and row.errors == 0 and row.accuracy_cosine_min > 0.999


def test_the_texts_sent_are_the_batch_rows(server):
    model = tiny_text_model()
    batch = make_workload(model.encoder.config, model.tokenizer, 3, 16, pool=1).batches[0]
    engine = http_engine(server.url, "tei", model.tokenizer)
    vectors = engine.run(*batch.as_tuple())
    again = engine.run(*batch.as_tuple())  # the body is built once per batch
    assert vectors.shape == (3, 64) and torch.equal(vectors, again)
    with pytest.raises(RuntimeError, match="HTTP 413"):  # the server's error is the call's error
        http_engine(server.url, "openai", None).run(torch.full((1, 80), 5), torch.ones(1, 80, dtype=torch.long))


def test_a_model_without_a_tokenizer_sends_token_ids_to_openai_only(server):
    ids, mask = torch.tensor([[101, 5, 6, 102]]), torch.ones(1, 4, dtype=torch.long)
    assert http_engine(server.url, "openai", None).run(ids, mask).shape == (1, 64)
    with pytest.raises(ConfigError, match="takes text, and this model has no tokenizer"):
        http_engine(server.url, "tei", None).run(ids, mask)
    with pytest.raises(ConfigError, match="needs --endpoint-kind sagemaker"):
        endpoint_engines(["my-endpoint"], "openai", None)
    with pytest.raises(ConfigError, match="unknown endpoint kind 'grpc'"):
        http_engine(server.url, "grpc", None)


def test_an_endpoint_that_refuses_is_a_failed_engine_not_a_crash(tmp_path):
    with pytest.raises(BenchmarkFailed, match="http-tei"):
        run_bench(tiny_text_model(), engines=[], batch_sizes=[1], seq_lens=[16], concurrency=[1], duration_s=0.2,
                  warmup=0, out_dir=tmp_path, progress=None, endpoints=["http://127.0.0.1:9"], endpoint_kind="tei")


def test_a_sagemaker_endpoint_through_invoke_endpoint():
    model = tiny_text_model()
    batch = make_workload(model.encoder.config, model.tokenizer, 2, 16, pool=1).batches[0]
    texts = [model.tokenizer.decode(ids[:int(n)].tolist()) for ids, n in zip(batch.input_ids,
                                                                            batch.attention_mask.sum(1))]
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    answer = json.dumps([[0.6, 0.8], [1.0, 0.0]]).encode()
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(answer), len(answer)),
                                              "ContentType": "application/json"},
                          {"EndpointName": "neuron-encoder-minilm", "ContentType": "application/json",
                           "Accept": "application/json",
                           "Body": json.dumps({"inputs": texts, "truncate": True}).encode()})
        engine = sagemaker_engine("neuron-encoder-minilm", model.tokenizer, client=client)
        vectors = engine.run(*batch.as_tuple())
        stub.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424,
                              expected_params={"EndpointName": "neuron-encoder-minilm", "ContentType": ANY,
                                               "Accept": ANY, "Body": ANY})
        with pytest.raises(Exception, match="ModelError"):
            engine.run(*batch.as_tuple())
    assert vectors.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)], [1.0, 0.0]]
    assert engine.name == "sagemaker-endpoint" and "invoke_endpoint" in engine.label


def test_parse_embeddings_reads_every_answer_form():
    encoded = base64.b64encode(np.array([0.5, 0.25], dtype="<f4").tobytes()).decode()
    openai = {"data": [{"index": 1, "embedding": [1.0, 0.0]}, {"index": 0, "embedding": encoded}]}
    assert parse_embeddings("openai", json.dumps(openai).encode()).tolist() == [[0.5, 0.25], [1.0, 0.0]]
    assert parse_embeddings("tei", b"[[1, 2]]").tolist() == [[1.0, 2.0]]


def test_the_command_line_benchmarks_an_endpoint(minilm_artifact, monkeypatch, capsys, tmp_path):
    from .test_cli import run_cli
    with ThreadServer(artifact=str(minilm_artifact)) as minilm:
        code, out, err = run_cli(monkeypatch, capsys, "bench", "--endpoint", minilm.url, "--endpoint-kind", "tei",
                                 "--batch-sizes", "2", "--seq-lens", "16", "--concurrency", "1", "--duration", "0.2",
                                 "--warmup", "1", "--out-dir", str(tmp_path))
    assert code == 0, err
    (result,) = tmp_path.glob("bench-*.json")
    saved = json.loads(result.read_text())
    assert [row["engine"] for row in saved["rows"]] == ["http-tei"] and "--endpoint" in saved["command"]
    assert saved["rows"][0]["accuracy_cosine_min"] > 0.999 and "http-tei" in out


@pytest.mark.parametrize("labels, kind", [(1, "tei"), (3, "sagemaker")])
def test_a_scorer_endpoint_is_timed_on_its_scoring_route(tmp_path, labels, kind):
    """A reranker through /predict (its rows sent back as (query, text) pairs), a classifier through /invocations
    (/predict's body): the logits come back in label order, as the eager fp32 model computes them."""
    from neuron_encoder.backends import CompileOptions
    from neuron_encoder.models import load_model
    from tests.families import build_classifier, build_tokenizer
    size = build_tokenizer("unigram" if labels == 1 else "wordpiece", tmp_path / "model")
    build_classifier("xlm-roberta" if labels == 1 else "bert", tmp_path / "model", num_labels=labels, vocab_size=size)
    with ThreadServer(model=str(tmp_path / "model"), artifacts_dir=str(tmp_path / "artifacts"), backend="cpu",
                      compile_options=CompileOptions(auto_cast="none"), batch_sizes="1,4", seq_lens="32") as running:
        result, _ = run_bench(load_model(tmp_path / "model"), engines=[], batch_sizes=[4], seq_lens=[32],
                              concurrency=[1], duration_s=None, calls=3, warmup=1, out_dir=tmp_path / "results",
                              progress=None, endpoints=[running.url], endpoint_kind=kind)
    (row,) = result.rows
    assert row.engine == f"http-{kind}" and row.errors == 0 and row.task == ("reranker" if labels == 1 else "classifier")
    # the text goes through decode and the server's tokenizer: within 1e-3, not to the bit; and top-1 is not
    # asserted, as a random model's rows tie within that (a reranker's 8 sample rows' logits differ by ~1e-4)
    assert row.accuracy_logit_max_abs < 1e-3 and row.accuracy_top1 is not None
