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
