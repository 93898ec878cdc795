"""deploy/sagemaker/inference.py: the four SageMaker handlers on a real CPU artifact give embed_texts' vectors,
speak the TEI /embed JSON contract, render every error as {"error", "error_type"}, and import nothing CLI-only."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap

import pytest
import torch

from neuron_encoder import load_compiled
from neuron_encoder.deploy.sagemaker import package_model
from neuron_encoder.embeddings import embed_texts

from . import scripts

TEXTS = ["A man plays a guitar.", "Someone strums a guitar.", "The tax law changed in May."]
LONG = " ".join(["guitar"] * 80)  # over 32 tokens: longer than the artifact's longest bucket


def load_handlers():
    return scripts.load_script("deploy/sagemaker/inference.py", "inference_under_test")


@pytest.fixture(scope="module")
def served(minilm_artifact):  # conftest's: buckets of length 16 and 32, the checkpoint's tokenizer inside
    assert (minilm_artifact / "tokenizer").is_dir()
    handlers = load_handlers()
    return handlers, handlers.model_fn(str(minilm_artifact))


class Context:
    """The part of TorchServe's context the handlers use: the response status."""

    def __init__(self) -> None:
        self.status = None

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status = (code, phrase)


def call(handlers, model, body, content_type="application/json", accept="application/json"):
    context = Context()
    data = handlers.input_fn(body if isinstance(body, (str, bytes)) else json.dumps(body), content_type)
    text, media_type = handlers.output_fn(handlers.predict_fn(data, model), accept, context)
    assert media_type == "application/json"
    return json.loads(text), context.status


def test_vectors_equal_embed_texts_on_the_same_texts(served, minilm_artifact):
    handlers, model = served
    vectors, status = call(handlers, model, {"inputs": TEXTS})
    assert status is None  # success leaves the 200 alone
    expected = embed_texts(load_compiled(minilm_artifact), TEXTS)  # with the artifact's own tokenizer
    assert len(vectors) == len(TEXTS) and len(vectors[0]) == 384
    assert torch.allclose(torch.tensor(vectors), torch.nn.functional.normalize(expected, dim=-1), atol=1e-6)


def test_a_single_string_gives_a_list_of_one(served):
    handlers, model = served
    one, _ = call(handlers, model, {"inputs": TEXTS[0]})
    many, _ = call(handlers, model, {"inputs": TEXTS})
    assert len(one) == 1 and torch.allclose(torch.tensor(one[0]), torch.tensor(many[0]), atol=1e-6)


def test_normalize_false_returns_the_pooled_vectors(served):
    handlers, model = served
    raw, _ = call(handlers, model, {"inputs": TEXTS, "normalize": False})
    norms = torch.tensor(raw).norm(dim=-1)
    assert not torch.allclose(norms, torch.ones(len(TEXTS)), atol=1e-3)  # MiniLM's mean pooling is not unit length
    unit, _ = call(handlers, model, {"inputs": TEXTS})
    assert torch.allclose(torch.nn.functional.normalize(torch.tensor(raw), dim=-1), torch.tensor(unit), atol=1e-6)


def test_long_texts_are_refused_unless_truncate(served):
    handlers, model = served
    error, status = call(handlers, model, {"inputs": [TEXTS[0], LONG]})
    assert status == (413, "Validation") and error["error_type"] == "Validation"  # as the server: 413
    assert "input 1 has 82 tokens, more than the largest compiled bucket (32)" in error["error"]
    vectors, status = call(handlers, model, {"inputs": [TEXTS[0], LONG], "truncate": True})
    assert status is None and len(vectors) == 2


@pytest.mark.parametrize("body, content_type, accept, status, fragment", [
    ("inputs=hi", "text/plain", "application/json", 415, "content type 'text/plain' is not supported"),
    ("{not json", "application/json", "application/json", 400, "not valid JSON"),
    ({"input": "hi"}, "application/json", "application/json", 422, "input: Extra inputs are not permitted"),
    ({"normalize": True}, "application/json", "application/json", 422, "inputs: must be a text or a list of texts"),
    (["hi"], "application/json", "application/json", 422, 'must be a JSON object with "inputs"'),
    ({"inputs": "hi", "normalise": True}, "application/json", "application/json", 422,
     "normalise: Extra inputs are not permitted"),
    ({"inputs": []}, "application/json", "application/json", 422, "inputs cannot be empty"),
    ({"inputs": ["hi"] * 33}, "application/json", "application/json", 413, "33 inputs in one request; at most 32"),
    ('{"inputs": "' + "x" * 2_000_000 + '"}', "application/json", "application/json", 413,
     "larger than the limit of 2000000 bytes"),
    ({"inputs": [1, 2]}, "application/json", "application/json", 422, "inputs: must be a text or a list of texts"),
    ({"inputs": "hi", "truncate": "yes"}, "application/json", "application/json", 422, "truncate: must be true"),
])
def test_bad_requests_are_json_errors_with_a_status(served, body, content_type, accept, status, fragment):
    handlers, model = served
    error, got = call(handlers, model, body, content_type, accept)
    assert got[0] == status and set(error) == {"error", "error_type"} and fragment in error["error"]


def test_a_model_without_tokenizer_says_so(tiny_artifact):
    handlers = load_handlers()
    error, status = call(handlers, handlers.model_fn(str(tiny_artifact)), {"inputs": "hello"})
    assert status == (422, "Tokenizer") and "no tokenizer" in error["error"]


def test_the_packaged_model_serves_with_only_its_own_code(minilm_artifact, tmp_path):
    """Extract model.tar.gz, put only its code/ on the path (as the container does), block CLI, web and AWS
    libraries, and run the handlers: they must work with what the archive carries."""
    package_model(minilm_artifact, tmp_path / "model.tar.gz")
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        tar.extractall(model_dir, filter="data")
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        BLOCKED = ("typer", "click", "fastapi", "uvicorn", "pydantic", "boto3", "botocore", "matplotlib", "httpx")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} must not be imported by the SageMaker handlers")
        sys.meta_path.insert(0, Block())
        import inference, neuron_encoder
        assert neuron_encoder.__file__.startswith({str(model_dir / "code")!r}), neuron_encoder.__file__
        model = inference.model_fn({str(model_dir)!r})
        body = inference.input_fn(json.dumps({{"inputs": ["hello world", "hi"]}}), "application/json")
        text, _ = inference.output_fn(inference.predict_fn(body, model), "application/json")
        print(len(json.loads(text)), len(json.loads(text)[0]))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                               env={"PYTHONPATH": str(model_dir / "code"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["2", "384"]


def test_the_handler_and_the_server_answer_alike(served, minilm_artifact):
    """One /invocations contract: the same bodies get the same status, error and vectors from the SageMaker
    handler and from `neuron-encoder serve` with its defaults (32 inputs, 2 MB, no auto-truncation)."""
    import httpx
    import numpy as np

    from .serve_helpers import ThreadServer
    handlers, model = served
    bodies = [{"inputs": TEXTS}, {"inputs": ["hi"] * 33}, {"inputs": [TEXTS[0], LONG]},
              {"inputs": [TEXTS[0], LONG], "truncate": None}, {"inputs": LONG, "truncate": True},
              '{"inputs": "' + "x" * 2_000_001 + '"}', {"inputs": "hi", "normalize": "no"}]
    with ThreadServer(artifact=str(minilm_artifact)) as server:
        for body in bodies:
            text = body if isinstance(body, str) else json.dumps(body)
            answer = httpx.post(f"{server.url}/invocations", content=text, timeout=60,
                                headers={"content-type": "application/json"})
            got, status = call(handlers, model, text)
            assert (status or (200,))[0] == answer.status_code, (body if len(text) < 200 else text[:80], got)
            if answer.status_code == 200:
                np.testing.assert_allclose(np.array(got), np.array(answer.json()), atol=2e-3)
            else:
                assert got == answer.json()


def test_a_neuron_worker_loads_with_only_the_containers_core_variable(neuron_host, tiny_model, tmp_path,
                                                                      monkeypatch):
    """Issue 20, item 11: inside a SageMaker container there may be no neuron-ls and no EC2 instance type
    in DMI; the environment deploy sets (NEURON_RT_NUM_CORES=1 per worker) is enough to count and load."""
    from neuron_encoder.backends import CompileOptions
    from neuron_encoder.compiler import compile_model
    from neuron_encoder.deploy.sagemaker import container_environment

    neuron_host(None, devices=0)  # a build host
    out = compile_model(tiny_model, batch_sizes="1", seq_lens="16", backend="neuron", out=tmp_path / "art",
                        options=CompileOptions(target="inf2", auto_cast="none")).path
    device = neuron_host(None, devices=1)  # the container: a device, but no instance type and no neuron-ls
    for name, value in container_environment({"backend": "neuron"}, "ml.inf2.xlarge").items():
        monkeypatch.setenv(name, value)
    model = load_handlers().model_fn(str(out))
    assert model.encoder.placement == {"b1_s16": (0,)} and device.double.placements
