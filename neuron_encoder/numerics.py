"""The numerics gate: fixed sample inputs, the fp32 eager reference, and the comparison that decides
whether a compiled bucket still computes what the model does.

The compiler runs it before anything is written; the runtime runs it on a cross-compiled
artifact's first load on a device, from the reference stored beside the buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import NumericsError
from .text import random_batch

GATE_RUNS = 3  # JIT fusers rewrite a graph after its first runs: check the rewritten one too


@dataclass(frozen=True)
class Tolerance:
    """fp32 artifacts are judged by max abs error, reduced precision by cosine (hidden states) or by the
    logits' max abs error over their scale (a classifier: one or two logits make cosine a sign check)."""

    max_abs: float = 1e-3
    min_cosine: float = 0.999
    max_logit_error: float = 0.05  # of the largest reference logit, or of 1 where all are smaller


def sample_inputs(config, batch: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Fixed inputs for the gate: random tokens, varied real lengths, both segments."""
    g = torch.Generator().manual_seed(seed * 1000 + batch * 7 + seq)
    lengths = torch.randint(max(1, seq // 4), seq + 1, (batch,), generator=g)
    lengths[0] = seq  # one full row, so the last positions are checked too
    ids, mask, _ = random_batch(config, lengths, seq, g).as_tuple()
    types = ((torch.arange(seq)[None, :] >= lengths[:, None] // 2) & (mask == 1)).long()
    return ids, mask, types


def reference(model: torch.nn.Module, config, batch: int, seq: int) -> dict:
    """The sample inputs of one bucket and the fp32 eager model's outputs on them."""
    inputs = sample_inputs(config, batch, seq)  # plain tensors: the compiler traces with them
    with torch.inference_mode():
        return {"inputs": inputs, "output": model(*inputs)}


def compare_outputs(got: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Max abs error and min per-token cosine over the real (unpadded) tokens; for a classifier's logits
    (B, L), over every row, with the max abs error over the logits' scale (`logit_error`) too."""
    logits = expected.dim() == 2  # one row per sequence, every row real
    if not logits:
        real = mask.bool()
        got, expected = got[real], expected[real]  # (N, H)
    got, expected = got.float(), expected.float()
    numerics = {
        "max_abs": (got - expected).abs().max().item(),
        "min_cosine": torch.nn.functional.cosine_similarity(got, expected, dim=-1).min().item(),
    }
    if logits:
        numerics["logit_error"] = numerics["max_abs"] / max(1.0, expected.abs().max().item())
    return numerics


def gate(numerics: dict[str, float], precision: str, tolerance: Tolerance) -> tuple[bool, str]:
    if precision == "fp32":
        return numerics["max_abs"] <= tolerance.max_abs, f"max abs error <= {tolerance.max_abs:g}"
    if "logit_error" in numerics:
        return (numerics["logit_error"] <= tolerance.max_logit_error,
                f"max abs logit error <= {tolerance.max_logit_error:g} x max(1, largest logit)")
    return numerics["min_cosine"] >= tolerance.min_cosine, f"min cosine >= {tolerance.min_cosine:g}"


def check_bucket(bucket, reference: dict, precision: str, tolerance: Tolerance, name: str) -> dict:
    """Run the stored sample inputs through a compiled bucket; NumericsError beyond tolerance."""
    runs = []
    with torch.inference_mode():
        for _ in range(GATE_RUNS):
            runs.append(compare_outputs(bucket(*reference["inputs"]), reference["output"], reference["inputs"][1]))
    numerics = {"max_abs": max(r["max_abs"] for r in runs), "min_cosine": min(r["min_cosine"] for r in runs)}
    if "logit_error" in runs[0]:
        numerics["logit_error"] = max(r["logit_error"] for r in runs)
    passed, rule = gate(numerics, precision, tolerance)
    if not passed:
        raise NumericsError(f"bucket {name} ({precision}) fails the numerics gate: max abs "
                            f"{numerics['max_abs']:.3g}, min cosine {numerics['min_cosine']:.6f}; "
                            f"needs {rule} (change with --max-abs / --min-cosine)")
    return {"verified": True, "passed": True, "rule": rule, **numerics}
