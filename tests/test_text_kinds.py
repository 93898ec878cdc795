"""Tokenizer parity: each kind of tokenizer (WordPiece, byte-level BPE, Unigram as XLM-R and as ALBERT,
a bare vocab.txt), trained locally, gives our Tokenizer the ids and masks transformers' AutoTokenizer
gives, singles and pairs, truncation included."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder.errors import CheckpointError, ShapeError
from neuron_encoder.text import Tokenizer, longest_first

from .families import CORPUS, TOKENIZER_KINDS, build_tokenizer

transformers = pytest.importorskip("transformers")

PAIRS = [(CORPUS[0], CORPUS[2]), (CORPUS[6], CORPUS[3] + " " + CORPUS[4]), ("short", CORPUS[5] * 2)]
PAD_TOKENS = {"wordpiece": "[PAD]", "vocab.txt": "[PAD]", "byte-level-bpe": "<pad>", "unigram": "<pad>",
              "albert-unigram": "<pad>"}


@pytest.fixture(scope="module", params=TOKENIZER_KINDS)
def kind(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    build_tokenizer(request.param, directory)
    return request.param, directory, transformers.AutoTokenizer.from_pretrained(str(directory))


def assert_same(ours, theirs):
    assert ours.input_ids.tolist() == theirs["input_ids"].tolist()
    assert ours.attention_mask.tolist() == theirs["attention_mask"].tolist()


@pytest.mark.parametrize("limit", [512, 24, 9])
def test_singles_match_auto_tokenizer(kind, limit):
    name, directory, auto = kind
    ours = Tokenizer(directory, max_length=limit)
    assert_same(ours.encode(CORPUS), auto(CORPUS, padding=True, truncation=True, max_length=limit,
                                          return_tensors="pt"))


@pytest.mark.parametrize("limit", [512, 30, 17, 8])
def test_pairs_match_auto_tokenizer(kind, limit):
    name, directory, auto = kind
    ours = Tokenizer(directory, max_length=limit)
    theirs = auto([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, truncation=True,
                  max_length=limit, return_tensors="pt")
    batch = ours.encode(PAIRS)
    assert_same(batch, theirs)
    if "token_type_ids" in theirs:  # RoBERTa's family returns none; its model has one segment
        assert batch.token_type_ids.tolist() == theirs["token_type_ids"].tolist()


QUERIES = [("short", CORPUS[5] * 2), ("a lazy dog", CORPUS[3] + " " + CORPUS[4])]


@pytest.mark.parametrize("limit", [512, 20])
@pytest.mark.parametrize("direction", ["right", "left"])
def test_only_second_and_left_cuts_match_auto_tokenizer(kind, limit, direction):
    """Reranking's cut keeps the whole query; TEI's truncation_direction cuts a text's beginning instead."""
    name, directory, auto = kind
    auto.truncation_side = direction
    ours = Tokenizer(directory, max_length=limit)
    theirs = auto([q for q, _ in QUERIES], [t for _, t in QUERIES], padding=True, truncation="only_second",
                  max_length=limit, return_tensors="pt")
    assert_same(ours.encode(QUERIES, direction=direction, strategy="only_second"), theirs)
    assert_same(ours.encode(PAIRS, direction=direction),
                auto([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, truncation=True,
                     max_length=limit, return_tensors="pt"))
    assert_same(ours.encode(CORPUS, direction=direction),
                auto(CORPUS, padding=True, truncation=True, max_length=limit, return_tensors="pt"))


def test_a_query_that_leaves_no_room_is_an_error_not_a_cut(kind):
    name, directory, auto = kind
    with pytest.raises(ShapeError, match="leaves no room"):
        Tokenizer(directory, max_length=12).encode([(CORPUS[0] * 2, "a text")], strategy="only_second")


def test_pad_id_is_the_tokenizers_own(kind):
    name, directory, auto = kind
    ours = Tokenizer(directory)
    assert ours.pad_id == auto.pad_token_id == auto.convert_tokens_to_ids(PAD_TOKENS[name])
    assert ours.encode(["a", CORPUS[0]]).input_ids[0, -1].item() == ours.pad_id


def test_lowercasing_follows_the_tokenizer_config(tmp_path):
    build_tokenizer("vocab.txt", tmp_path)
    assert Tokenizer(tmp_path).token_ids(["The"]) != Tokenizer(tmp_path).token_ids(["the"])  # cased, as it says


@pytest.mark.parametrize("first, second, budget, kept", [
    (3, 4, 10, (3, 4)), (3, 20, 10, (3, 7)), (20, 3, 10, (7, 3)), (8, 9, 10, (5, 5)), (9, 8, 9, (5, 4)),
    (30, 40, 7, (3, 4)),
])
def test_longest_first_cuts_the_longer_text_first(first, second, budget, kept):
    assert longest_first(first, second, budget) == kept


def test_a_sentencepiece_only_repository_needs_the_converter(tmp_path, monkeypatch):
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"not a model")
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # as if not installed
    with pytest.raises(CheckpointError, match="only sentencepiece.bpe.model; converting it needs transformers: "
                                              "pip install transformers sentencepiece protobuf"):
        Tokenizer(tmp_path)


def test_an_unreadable_sentencepiece_model_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "xlm-roberta"}')
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="cannot convert .*sentencepiece.bpe.model"):
        Tokenizer(tmp_path)


def test_a_sentencepiece_only_repository_is_converted_as_transformers_reads_it(tmp_path):
    """Some XLM-R repositories ship only sentencepiece.bpe.model: converted once, and an artifact then
    carries the conversion as tokenizer.json."""
    import io
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 10), model_writer=model, vocab_size=150,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   bos_id=0, pad_id=1, eos_id=2, unk_id=3, minloglevel=2)
    (tmp_path / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    (tmp_path / "config.json").write_text('{"model_type": "xlm-roberta"}')
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer(tmp_path, max_length=12)
    assert_same(ours.encode(CORPUS), auto(CORPUS, padding=True, truncation=True, max_length=12, return_tensors="pt"))
    assert ours.pad_id == auto.pad_token_id
    ours.save(tmp_path / "artifact")
    assert Tokenizer(tmp_path / "artifact").token_ids(CORPUS) == ours.token_ids(CORPUS)
    assert (tmp_path / "artifact" / "tokenizer.json").exists()
