"""Classification and reranking, end to end: random task checkpoints of five families, built here with
transformers, score as transformers' text-classification pipeline and sentence-transformers' CrossEncoder
score them, eager and through a compiled CPU artifact."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder.backends import CompileOptions
from neuron_encoder.classification import classify, load_scorer, rerank
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import ConfigError, ShapeError
from neuron_encoder.models import load_model
from neuron_encoder.runtime import load_compiled

from .families import CORPUS, build_checkpoint, build_classifier, build_tokenizer

transformers = pytest.importorskip("transformers")

CROSS_ENCODER = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
# family: (tokenizer kind, labels, what else its config says)
CHECKPOINTS = {
    "bert": ("wordpiece", 3, {"id2label": {0: "negative", 1: "neutral", 2: "positive"}}),
    "distilbert": ("wordpiece", 2, {}),
    "roberta": ("byte-level-bpe", 4, {"problem_type": "multi_label_classification"}),
    "xlm-roberta": ("unigram", 1, {"sentence_transformers": CROSS_ENCODER}),  # a reranker
    "electra": ("wordpiece", 3, {}),
}
SINGLES = [CORPUS[0], CORPUS[1], CORPUS[2][:30], "ok"]  # all within the 64 positions: the pipeline cuts nothing
PAIRS = [(CORPUS[0], CORPUS[1][:20]), ("a guitar", CORPUS[1]), (CORPUS[3][:25], CORPUS[4][:40])]
QUERY, DOCUMENTS = "a man with a guitar", [CORPUS[1], CORPUS[0], CORPUS[5][:30], "guitar"]
FP32 = CompileOptions(auto_cast="none")  # the parity below is about exactness: fp32 whatever the run's policy


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def checkpoint(request, tmp_path_factory):
    family = request.param
    kind, labels, settings = CHECKPOINTS[family]
    directory = tmp_path_factory.mktemp(family)
    size = build_tokenizer(kind, directory)
    build_classifier(family, directory, num_labels=labels, vocab_size=size, **settings)
    return family, directory


@pytest.fixture(scope="module")
def models(checkpoint, tmp_path_factory):
    """The checkpoint eager, and compiled for the CPU in fp32 (buckets a batch is padded to and split over)."""
    family, directory = checkpoint
    resolved = load_model(directory)
    out = tmp_path_factory.mktemp("artifact") / family
    compile_model(resolved, batch_sizes="1,2", seq_lens="16,32,64", backend="cpu", options=FP32, out=out,
                  progress=lambda line: None)
    return {"eager": resolved, "compiled": load_compiled(out)}


@pytest.fixture(scope="module")
def theirs(checkpoint):
    family, directory = checkpoint
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer, transformers.pipeline("text-classification", model=model, tokenizer=tokenizer,
                                                   top_k=None, device="cpu")


def as_table(predictions):
    return [{p["label"]: p["score"] for p in row} for row in predictions]


@pytest.mark.parametrize("way", ["eager", "compiled"])
def test_scores_equal_the_text_classification_pipeline(models, theirs, way):
    model, tokenizer, pipe = theirs
    for inputs, asked in ((SINGLES, SINGLES), (PAIRS, [{"text": a, "text_pair": b} for a, b in PAIRS])):
        ours = classify(models[way], inputs)
        expected = pipe(asked)
        assert [[p["label"] for p in row] for row in ours] == [[p["label"] for p in row] for row in expected]
        for got, want in zip(as_table(ours), as_table(expected)):
            assert got.keys() == want.keys()
            assert max(abs(got[label] - want[label]) for label in got) <= 2e-4


@pytest.mark.parametrize("way", ["eager", "compiled"])
def test_raw_scores_are_the_logits(models, theirs, way):
    model, tokenizer, _ = theirs
    ours = classify(models[way], PAIRS, raw_scores=True)
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    for row, expected in zip(ours, logits.tolist()):
        got = {p["label"]: p["score"] for p in row}
        assert max(abs(got[model.config.id2label[i]] - value) for i, value in enumerate(expected)) <= 2e-4


@pytest.mark.parametrize("way", ["eager", "compiled"])
def test_rerank_equals_cross_encoder_predict(checkpoint, models, way):
    family, directory = checkpoint
    if CHECKPOINTS[family][1] != 1:
        with pytest.raises(ConfigError, match="needs a reranker"):
            rerank(models[way], QUERY, DOCUMENTS)
        return
    from sentence_transformers import CrossEncoder
    expected = CrossEncoder(str(directory), device="cpu").predict([(QUERY, text) for text in DOCUMENTS])
    results = rerank(models[way], QUERY, DOCUMENTS)
    assert [r["index"] for r in results] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])
    assert max(abs(r["score"] - float(expected[r["index"]])) for r in results) <= 2e-4
    raw = rerank(models[way], QUERY, DOCUMENTS, raw_scores=True)
    assert {r["index"]: r["score"] for r in raw} == pytest.approx(
        {r["index"]: float(torch.logit(torch.tensor(r["score"], dtype=torch.float64))) for r in results}, abs=2e-3)


def test_a_long_text_keeps_the_whole_query(tmp_path):
    """only_second: the text is cut to fit, never the query; a query with no room left is an error."""
    size = build_tokenizer("unigram", tmp_path)
    build_classifier("xlm-roberta", tmp_path, num_labels=1, vocab_size=size)
    reranker = load_model(tmp_path)
    query, long_text = "a lazy dog", " ".join(CORPUS) * 4
    batch = reranker.tokenizer.encode([(query, long_text)], strategy="only_second")
    query_ids = reranker.tokenizer._tok.encode(query, add_special_tokens=False).ids
    assert batch.lengths == [64] and batch.input_ids[0, 1:1 + len(query_ids)].tolist() == query_ids
    with torch.inference_mode():
        expected = reranker.encoder(*batch.as_tuple())[0, 0].sigmoid().item()
    assert rerank(reranker, query, [long_text])[0]["score"] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ShapeError, match="leaves no room"):
        rerank(reranker, long_text, ["a text"])
    with pytest.raises(ShapeError, match="more than the limit"):
        rerank(reranker, query, [long_text], truncate=False)


def test_the_command_fits_the_model(tmp_path):
    """classify and rerank refuse an embedder; embed and quickstart refuse a classifier; each names the command
    to use."""
    build_tokenizer("wordpiece", tmp_path / "embedder")
    build_checkpoint("bert", tmp_path / "embedder", vocab_size=300)
    with pytest.raises(ConfigError, match="embedding model: it cannot classify"):
        classify(load_scorer(str(tmp_path / "embedder")), ["a text"])
    with pytest.raises(ConfigError, match="one of --model"):
        load_scorer()
    size = build_tokenizer("wordpiece", tmp_path / "classifier")
    build_classifier("bert", tmp_path / "classifier", num_labels=2, vocab_size=size)
    from neuron_encoder.embeddings import embed_model_texts
    with pytest.raises(ConfigError, match="use neuron-encoder classify"):
        embed_model_texts(str(tmp_path / "classifier"), ["a text"])
    with pytest.raises(ConfigError, match="a text or a pair"):
        classify(load_scorer(str(tmp_path / "classifier")), [["a", "b", "c"]])
    from neuron_encoder.quickstart import run_quickstart
    with pytest.raises(ConfigError, match="quickstart is the embeddings job"):
        run_quickstart(str(tmp_path / "classifier"), bench=False, echo=lambda line: None)
