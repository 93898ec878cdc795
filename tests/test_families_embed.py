"""sentence-transformers layouts of the other families, embedded by us against sentence-transformers on
the same texts (multilingual ones included): the library, `neuron-encoder embed`, and the server."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from typer.testing import CliRunner

from neuron_encoder.cli import app
from neuron_encoder.compiler import compile_model
from neuron_encoder.embeddings import embed_texts
from neuron_encoder.models import load_model

from .families import CORPUS, build_sentence_transformer
from .serve_helpers import ThreadServer

pytest.importorskip("sentence_transformers")

TEXTS = CORPUS + ["short", "Ein Satz. Une phrase. 一句话。"]


def cosines(ours, theirs) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(torch.as_tensor(ours).float(), torch.as_tensor(theirs).float())


@pytest.fixture(scope="module")
def xlm_r(tmp_path_factory):
    """XLM-R with a Unigram tokenizer, mean pooling and Normalize; sentence-transformers' own vectors."""
    directory, model = build_sentence_transformer(tmp_path_factory.mktemp("xlm-r"))
    return directory, torch.tensor(model.encode(TEXTS, normalize_embeddings=True))


@pytest.mark.parametrize("family, kind, pooling", [
    ("xlm-roberta", "unigram", "mean"),
    ("camembert", "unigram", "cls"),
    ("roberta", "byte-level-bpe", "max"),
    ("mpnet", "byte-level-bpe", "mean"),
    ("electra", "wordpiece", "mean"),
    ("distilbert", "wordpiece", "cls"),
    ("bert", "wordpiece", "max"),
    ("albert", "albert-unigram", "mean"),
])
def test_sentence_transformers_layouts_embed_as_sentence_transformers(tmp_path, family, kind, pooling):
    directory, model = build_sentence_transformer(tmp_path, family, kind, pooling)
    resolved = load_model(directory)
    encoder, tokenizer = resolved.encoder, resolved.tokenizer
    assert (encoder.config.family, encoder.config.pooling, encoder.config.normalize) == (family, pooling, True)
    expected = model.encode(TEXTS, normalize_embeddings=True)
    assert cosines(embed_texts(encoder, TEXTS, tokenizer, batch_size=4), expected).min() >= 0.9999


def test_neuron_encoder_embed_on_xlm_r(xlm_r):
    directory, expected = xlm_r
    result = CliRunner().invoke(app, ["embed", *TEXTS, "--model", str(directory)])
    assert result.exit_code == 0, result.output
    assert cosines(json.loads(result.output)["embeddings"], expected).min() >= 0.9999


def test_serving_xlm_r_from_its_cpu_artifact(xlm_r, tmp_path):
    directory, expected = xlm_r
    artifact = compile_model(str(directory), batch_sizes="1,4", seq_lens="16,64", backend="cpu",
                             out=tmp_path / "art", progress=lambda message: None).path
    with ThreadServer(artifact=str(artifact)) as server:
        tei = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS}, timeout=120)
        openai = httpx.post(f"{server.url}/v1/embeddings", json={"input": TEXTS, "model": "xlm-r"}, timeout=120)
    assert tei.status_code == openai.status_code == 200, (tei.text, openai.text)
    assert cosines(tei.json(), expected).min() >= 0.9999
    assert cosines([d["embedding"] for d in openai.json()["data"]], expected).min() >= 0.9999
