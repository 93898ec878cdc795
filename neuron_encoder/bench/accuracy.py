"""Accuracy against the fp32 reference: every engine's pooled embeddings on fixed sample inputs,
compared with CPU fp32 eager's by cosine similarity; a classifier's or reranker's logits by their max
abs difference and top-1 agreement."""

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
    pooled: torch.Tensor  # (N, H); a classifier's logits (N, L)
    pooling: str
    task: str = "embedding"  # task.KINDS: a classifier or reranker is scored by logit_accuracy


def make_reference(model: torch.nn.Module, sample: Batch, task: str = "embedding") -> Reference:
    """Run the CPU fp32 eager model once on `sample` (its `pooling` as configured; a classifier's logits)."""
    inputs = sample.as_tuple()
    with torch.inference_mode():
        out = model(*inputs).float()
    if out.dim() == 2:  # the model's head computed logits
        return Reference(inputs, out, "logits", task)
    pooling = model.config.pooling
    return Reference(inputs, pool(out, inputs[1], pooling, normalize=False), pooling, task)


def logit_accuracy(run, reference: Reference) -> dict[str, float]:
    """A classifier's or reranker's logits against the reference's: the max abs difference, and the top-1
    agreement (the share of rows whose best label is the reference's; one label: whether the best-scored row
    of the sample is, as reranking would put first)."""
    out = run(*reference.inputs)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(reference.pooled.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(f"engine returned {shape}, expected logits {tuple(reference.pooled.shape)}")
    logits = out.detach().float().cpu()
    if logits.isnan().any():
        raise NumericsError("engine returned NaN logits")
    expected = reference.pooled
    best = (lambda x: x.argmax(dim=0)) if expected.shape[1] == 1 else (lambda x: x.argmax(dim=1))
    return {"accuracy_logit_max_abs": (logits - expected).abs().max().item(),
            "accuracy_top1": (best(logits) == best(expected)).float().mean().item()}


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
