"""Accuracy against the fp32 reference: every engine's pooled embeddings on fixed sample inputs,
compared with CPU fp32 eager's by cosine similarity."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuron_encoder.errors import NumericsError, ShapeError
from neuron_encoder.model import pool
from neuron_encoder.text import Batch


@dataclass(frozen=True)
class Reference:
    """Fixed sample inputs and their pooled fp32 eager embeddings, to score every engine against."""

    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    pooled: torch.Tensor  # (N, H)
    pooling: str


def make_reference(model: torch.nn.Module, sample: Batch) -> Reference:
    """Run the CPU fp32 eager model once on `sample` (its `pooling` as configured)."""
    inputs = sample.as_tuple()
    with torch.inference_mode():
        hidden = model(*inputs).float()
    pooling = model.config.pooling
    return Reference(inputs, pool(hidden, inputs[1], pooling, normalize=False), pooling)


def accuracy(run, reference: Reference) -> float:
    """The lowest cosine similarity between a engine's pooled embeddings and the reference's.

    A engine returns hidden states (B, T, H), pooled here, or pooled embeddings (B, H) as endpoints do
    (cosine ignores their normalisation); anything else is a ShapeError.
    """
    out = run(*reference.inputs)
    batch, hidden_size = reference.inputs[0].shape, reference.pooled.shape[1]
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (batch[0], hidden_size):
        pooled = out.detach().float().cpu()
    elif isinstance(out, torch.Tensor) and out.dim() == 3 and out.shape[:2] == batch and out.shape[2] == hidden_size:
        pooled = pool(out.detach().float().cpu(), reference.inputs[1], reference.pooling, normalize=False)
    else:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(f"engine returned {shape}, expected hidden states "
                         f"{tuple(batch) + (hidden_size,)} or pooled embeddings {(batch[0], hidden_size)}")
    cosine = float(torch.nn.functional.cosine_similarity(pooled, reference.pooled, dim=-1).min())
    if cosine != cosine:  # NaN: the engine computed garbage
        raise NumericsError("engine returned NaN embeddings")
    return cosine
