"""The one resolver: each kind of spec, and the provenance it records beside (not on) the encoder."""

from __future__ import annotations

from neuron_encoder import Encoder
from neuron_encoder.models import load_model
from neuron_encoder.weights import resolve


def test_a_checkpoint_resolves_with_its_tokenizer_and_directory(minilm_resolved):
    encoder, model_id, tokenizer, directory, task = minilm_resolved
    assert task.kind == "embedding"
    assert model_id == "minilm" and directory == resolve("minilm") and tokenizer.max_length == 256  # sentence_bert_config.json
    assert not {"checkpoint_dir", "name_or_path"} & set(vars(encoder))  # nothing patched onto the module


def test_random_weights_and_a_built_encoder_have_no_provenance(tiny_model):
    resolved = load_model("random:tiny")
    assert (resolved.model_id, resolved.tokenizer, resolved.checkpoint_dir) == ("random:tiny", None, None)
    torch_equal = all((a == b).all() for a, b in zip(resolved.encoder.parameters(),
                                                     load_model("random:tiny").encoder.parameters()))
    assert torch_equal  # seeded
    built = load_model(tiny_model)
    assert built.encoder is tiny_model and (built.model_id, built.tokenizer, built.checkpoint_dir) == ("custom", None, None)
    assert isinstance(built.encoder, Encoder)
