"""Accuracy against the fp32 eager reference: identical, noisy and malformed outputs."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder.bench.accuracy import accuracy, make_reference
from neuron_encoder.bench.workload import synthetic_workload
from neuron_encoder.errors import NumericsError, ShapeError


def test_accuracy_against_the_fp32_reference(tiny_model, tiny_config):
    reference = make_reference(tiny_model, synthetic_workload(tiny_config, 2, 16, pool=1).batches[0])
    assert accuracy(tiny_model, reference) == pytest.approx(1.0, abs=1e-6)
    generator = torch.Generator().manual_seed(0)

    def noisy(*inputs):
        hidden = tiny_model(*inputs)
        return hidden + torch.randn(hidden.shape, generator=generator)

    assert accuracy(noisy, reference) < 0.99
    with pytest.raises(ShapeError, match="expected hidden states"):
        accuracy(lambda *inputs: torch.zeros(3), reference)
    with pytest.raises(ShapeError, match="expected hidden states"):  # right (B, T), wrong hidden size
        accuracy(lambda ids, *rest: torch.zeros(*ids.shape, 5), reference)
    with pytest.raises(NumericsError, match="NaN"):
        accuracy(lambda *inputs: tiny_model(*inputs) * float("nan"), reference)


def test_a_classifiers_accuracy_is_its_logit_difference_and_top1(tiny_config):
    from neuron_encoder import Encoder
    from neuron_encoder.bench.accuracy import logit_accuracy
    torch.manual_seed(0)
    classifier = Encoder(tiny_config.replace(num_labels=3)).eval()
    reference = make_reference(classifier, synthetic_workload(tiny_config, 4, 16, pool=1).batches[0], "classifier")
    assert reference.pooling == "logits" and reference.task == "classifier"
    assert logit_accuracy(classifier, reference) == {"accuracy_logit_max_abs": 0.0, "accuracy_top1": 1.0}
    flipped = logit_accuracy(lambda *inputs: -classifier(*inputs), reference)
    assert flipped["accuracy_logit_max_abs"] > 0 and flipped["accuracy_top1"] < 1
    with pytest.raises(ShapeError, match="expected logits"):
        logit_accuracy(lambda *inputs: torch.zeros(4, 2), reference)
