"""Loading real checkpoints: the shipped all-MiniLM-L6-v2 against sentence-transformers, and bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from neuron_encoder import Encoder
from neuron_encoder.embeddings import cosine_matrix, embed_texts
from neuron_encoder.errors import CheckpointError
from neuron_encoder.weights import hf_to_ours, resolve

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar on stage.",
    "The stock market fell sharply on Monday.",
    "Kittens sleep most of the day.",
]


def test_key_map_names():
    assert hf_to_ours("encoder.layer.3.attention.self.query.weight") == "layers.3.attention.qkv.weight[q]"
    assert hf_to_ours("bert.encoder.layer.11.output.LayerNorm.bias") == "layers.11.feed_forward_norm.bias"
    assert hf_to_ours("embeddings.word_embeddings.weight") == "embeddings.token.weight"
    assert hf_to_ours("pooler.dense.weight") == "head.dense.weight"  # a classifier's; an embedder ignores it
    assert hf_to_ours("roberta.pooler.dense.weight", "roberta") is None


def test_minilm_resolves_to_the_shipped_files():
    directory = resolve("minilm")
    assert (directory / "model.safetensors").exists() and (directory / "tokenizer.json").exists()


def test_minilm_config_from_its_files(minilm):
    c = minilm.config
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (384, 6, 1536)
    assert c.pooling == "mean" and c.normalize  # from 1_Pooling/config.json and modules.json


@pytest.mark.slow
def test_minilm_embeddings_equal_sentence_transformers(minilm_resolved):
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(resolve("minilm")), device="cpu")
    expected = torch.tensor(reference.encode(SENTENCES, normalize_embeddings=True))
    ours = embed_texts(minilm_resolved.encoder, SENTENCES, minilm_resolved.tokenizer)
    cosines = torch.nn.functional.cosine_similarity(ours, expected, dim=-1)
    assert cosines.min().item() >= 0.9999, cosines


def test_a_text_longer_than_max_seq_length_is_cut_where_sentence_transformers_cuts_it(minilm_resolved):
    """sentence_bert_config.json's max_seq_length (256) is what the tokenizer keeps, not the model's 512."""
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(resolve("minilm")), device="cpu")
    long_text = " ".join(["the guitar player strums a long chord progression on stage"] * 40)  # ~400 tokens
    assert minilm_resolved.tokenizer.max_length == 256 < len(minilm_resolved.tokenizer.token_ids([long_text])[0])
    expected = torch.tensor(reference.encode([long_text], normalize_embeddings=True))
    ours = embed_texts(minilm_resolved.encoder, [long_text], minilm_resolved.tokenizer)
    assert torch.nn.functional.cosine_similarity(ours, expected).item() >= 0.9999


@pytest.mark.parametrize("text", ['{"max_seq_length": 0}', '{"max_seq_length": "long"}'])
def test_a_bad_max_seq_length_is_a_checkpoint_error(checkpoint_copy, text):
    from neuron_encoder.errors import CheckpointError
    from neuron_encoder.weights import text_limit
    (checkpoint_copy / "sentence_bert_config.json").write_text(text)
    with pytest.raises(CheckpointError, match="max_seq_length must be a positive integer"):
        text_limit(checkpoint_copy, 512)


def test_paraphrase_scores_above_unrelated(minilm_resolved):
    sim = cosine_matrix(embed_texts(minilm_resolved.encoder, SENTENCES, minilm_resolved.tokenizer))
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    torch.testing.assert_close(sim.diagonal(), torch.ones(4))


@pytest.fixture
def checkpoint_copy(tmp_path):
    """A writable copy of the shipped checkpoint to break in various ways."""
    target = tmp_path / "ckpt"
    shutil.copytree(resolve("minilm"), target)
    return target


def test_loads_pytorch_model_bin(checkpoint_copy, minilm):
    state = load_file(str(checkpoint_copy / "model.safetensors"))
    (checkpoint_copy / "model.safetensors").unlink()
    torch.save(state, checkpoint_copy / "pytorch_model.bin")
    model = Encoder.from_pretrained(checkpoint_copy)
    torch.testing.assert_close(model.layers[0].attention.qkv.weight, minilm.layers[0].attention.qkv.weight)


def test_missing_key_is_listed(checkpoint_copy):
    state = load_file(str(checkpoint_copy / "model.safetensors"))
    del state["encoder.layer.2.attention.self.key.weight"]
    save_file(state, str(checkpoint_copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layers\.2\.attention\.qkv\.weight\[k\]"):
        Encoder.from_pretrained(checkpoint_copy)


def test_wrong_shape_is_listed(checkpoint_copy):
    state = load_file(str(checkpoint_copy / "model.safetensors"))
    state["encoder.layer.0.intermediate.dense.bias"] = torch.zeros(7)
    save_file(state, str(checkpoint_copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"mis-shaped keys \(1\): encoder\.layer\.0\.intermediate\.dense\.bias: "
                                              r"checkpoint \(7,\), model \(1536,\)") as info:
        Encoder.from_pretrained(checkpoint_copy)
    assert "missing" not in str(info.value)


def test_unexpected_key_is_listed(checkpoint_copy):
    state = load_file(str(checkpoint_copy / "model.safetensors"))
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    save_file(state, str(checkpoint_copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): encoder\.layer\.0\.attention\.self\.rotary"):
        Encoder.from_pretrained(checkpoint_copy)


def test_config_that_disagrees_with_the_weights(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["intermediate_size"] = 1000
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="mis-shaped keys \\(18\\)"):
        Encoder.from_pretrained(checkpoint_copy)


def test_not_a_directory(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is not a directory"):
        Encoder.from_pretrained(file)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Encoder.from_pretrained(tmp_path / "nowhere")


def test_directory_without_weights(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        Encoder.from_pretrained(checkpoint_copy)


def test_corrupt_weights_file(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        Encoder.from_pretrained(checkpoint_copy)


def test_not_bert(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["model_type"] = "gpt2"
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="gpt2"):
        Encoder.from_pretrained(checkpoint_copy)


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="could not fetch 'someone/no-such-model'"):
        Encoder.from_pretrained("someone/no-such-model")


@pytest.mark.parametrize("name, text, words", [
    ("1_Pooling/config.json", "{not json", "1_Pooling/config.json: not JSON"),
    ("1_Pooling/config.json", "[1, 2]", "expected a JSON object"),
    ("modules.json", "{oops", "modules.json: not JSON"),
    ("config.json", "", "config.json: not JSON"),
])
def test_malformed_sentence_transformers_files_are_checkpoint_errors(tmp_path, name, text, words):
    """A broken file beside the weights is named in a CheckpointError (exit 3), never a raw JSONDecodeError."""
    import shutil
    from neuron_encoder.weights import resolve
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(resolve("minilm"), checkpoint)
    (checkpoint / name).write_text(text)
    with pytest.raises(CheckpointError, match=words.replace(".", r"\.")):
        Encoder.from_pretrained(checkpoint)
