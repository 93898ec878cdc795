"""Classifier and reranker heads against transformers' *ForSequenceClassification on the same weights,
and the scores each checkpoint asks for (task.py)."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder.config import FAMILIES
from neuron_encoder.errors import CheckpointError, ConfigError
from neuron_encoder.models import load_model
from neuron_encoder.task import EMBEDDING, Task, scores, task_from_hf_config
from tests.families import PAD, build_checkpoint, build_classifier, padded_ids


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_head_computes_transformers_logits(tmp_path, family):
    hf = build_classifier(family, tmp_path, num_labels=3)
    resolved = load_model(tmp_path)
    ids, mask, types = padded_ids(family)
    with torch.inference_mode():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = resolved.encoder(ids, mask, types)
    assert got.shape == (3, 3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert resolved.task == Task("classifier", ("LABEL_0", "LABEL_1", "LABEL_2"), "softmax")
    assert PAD[family] == resolved.encoder.config.pad_token_id


def test_a_base_model_stays_an_embedder_and_ignores_its_pooler(tmp_path):
    build_checkpoint("bert", tmp_path)
    resolved = load_model(tmp_path)
    assert resolved.encoder.head is None and resolved.task == EMBEDDING
    with pytest.raises(ConfigError, match="no classification head"):
        resolved.encoder.logits(*padded_ids("bert"))


@pytest.mark.parametrize("hf, num_labels, expected", [
    ({}, 3, "softmax"),
    ({"problem_type": "single_label_classification"}, 3, "softmax"),
    ({"problem_type": "multi_label_classification"}, 3, "sigmoid"),
    ({}, 1, "sigmoid"),
    ({"problem_type": "regression"}, 1, "none"),
    ({"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}, 1, "none"),
    ({"sbert_ce_default_activation_function": "torch.nn.modules.activation.Sigmoid"}, 3, "sigmoid"),
    ({"problem_type": "multi_label_classification",
      "sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Softmax"}}, 3, "softmax"),
])
def test_scores_follow_the_checkpoint_and_a_cross_encoder_config_wins(hf, num_labels, expected):
    task = task_from_hf_config(hf, num_labels)
    assert task.activation == expected
    assert task.kind == ("reranker" if num_labels == 1 else "classifier")


def test_config_sentence_transformers_activation_and_labels():
    task = task_from_hf_config({"id2label": {"0": "neg", "1": "pos"}}, 2,
                               {"activation_fn": "torch.nn.modules.activation.Sigmoid"})
    assert task == Task("classifier", ("neg", "pos"), "sigmoid")
    assert task.label2id == {"neg": 0, "pos": 1}
    assert Task.from_dict(task.to_dict()) == task and Task.from_dict(None) == EMBEDDING
    with pytest.raises(CheckpointError, match="not one of"):
        task_from_hf_config({"sentence_transformers": {"activation_fn": "my.module.Tanh"}}, 1)


def test_scores_apply_the_activation_unless_raw():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert torch.equal(scores(logits, Task("classifier", ("a", "b", "c"), "softmax"), raw=True), logits)
    torch.testing.assert_close(scores(logits, Task("classifier", ("a", "b", "c"), "softmax")), logits.softmax(-1))
    torch.testing.assert_close(scores(logits, Task("classifier", ("a", "b", "c"), "sigmoid")), logits.sigmoid())
