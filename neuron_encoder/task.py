"""What a model is for: embedding, classifier or reranker, with a classifier's labels and the function that
turns its logits into scores, read from the checkpoint as transformers' and sentence-transformers' own code
reads it. The encoder computes logits (model.ClassificationHead); this decides what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import CheckpointError, ConfigError

KINDS = ("embedding", "classifier", "reranker")
SCORE_FUNCTIONS = ("sigmoid", "softmax", "none")
# sentence-transformers stores a CrossEncoder's activation as a class path; the ones it ships with.
CROSS_ENCODER_ACTIVATIONS = {"Sigmoid": "sigmoid", "Softmax": "softmax", "Identity": "none"}


@dataclass(frozen=True)
class Task:
    """kind; id2label (label i's name; empty for an embedder); activation, from logits to scores."""

    kind: str = "embedding"
    id2label: tuple[str, ...] = ()
    activation: str = "none"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"task {self.kind!r} is not one of {KINDS}")
        if self.activation not in SCORE_FUNCTIONS:
            raise ConfigError(f"activation {self.activation!r} is not one of {SCORE_FUNCTIONS}")
        if (self.kind == "embedding") != (not self.id2label):
            raise ConfigError(f"a {self.kind} has {len(self.id2label)} labels")

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.id2label)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id2label": {str(i): label for i, label in enumerate(self.id2label)},
                "activation": self.activation}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Task:
        """A manifest's record; an artifact from before tasks existed is an embedder."""
        if not values:
            return cls()
        labels = values.get("id2label") or {}
        return cls(values["kind"], tuple(labels[str(i)] for i in range(len(labels))), values["activation"])


EMBEDDING = Task()


def task_from_hf_config(hf: dict[str, Any], num_labels: int, cross_encoder: dict[str, Any] | None = None) -> Task:
    """The task of a checkpoint whose config.json is `hf` and whose encoder has `num_labels` logits (0: an
    embedder). One label is a reranker (as text-embeddings-inference decides). Scores follow the checkpoint:
    a sentence-transformers CrossEncoder's activation where it names one (config.json's
    sentence_transformers.activation_fn, the legacy sbert_ce_default_activation_function, or
    `cross_encoder`, config_sentence_transformers.json), else transformers' text-classification pipeline's
    rule: none for regression, sigmoid for one label or multi-label, softmax otherwise."""
    if not num_labels:
        return EMBEDDING
    named = hf.get("id2label") if isinstance(hf.get("id2label"), dict) else {}
    labels = tuple(str(named.get(str(i), named.get(i, f"LABEL_{i}"))) for i in range(num_labels))
    path = ((hf.get("sentence_transformers") or {}).get("activation_fn")
            or hf.get("sbert_ce_default_activation_function") or (cross_encoder or {}).get("activation_fn"))
    if path:
        activation = CROSS_ENCODER_ACTIVATIONS.get(str(path).rsplit(".", 1)[-1])
        if activation is None:
            raise CheckpointError(f"the CrossEncoder activation {path!r} is not one of "
                                  f"{', '.join(f'torch.nn.{name}' for name in CROSS_ENCODER_ACTIVATIONS)}")
    elif hf.get("problem_type") == "regression":
        activation = "none"
    elif num_labels == 1 or hf.get("problem_type") == "multi_label_classification":
        activation = "sigmoid"
    else:
        activation = "softmax"
    return Task("reranker" if num_labels == 1 else "classifier", labels, activation)


def scores(logits: torch.Tensor, task: Task, raw: bool = False) -> torch.Tensor:
    """The task's scores from logits (B, L), in fp32: the logits themselves when `raw`."""
    logits = logits.float()
    if raw or task.activation == "none":
        return logits
    return logits.sigmoid() if task.activation == "sigmoid" else logits.softmax(dim=-1)
