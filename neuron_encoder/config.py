"""EncoderConfig: the shape of a BERT-style encoder, with BERT's real defaults and named presets.

Other encoder families are BERT with a few named differences, each one field here: no segments
(type_vocab_size 0), positions counted from an offset, narrower embeddings projected up, a relative
position bias. from_hf_config reads each family's config.json onto them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, ShapeError

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
POOLINGS = ("cls", "mean", "max")
# Hugging Face model_type values we read; weights.py holds each one's checkpoint names.
FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet", "albert")


@dataclass(frozen=True)
class EncoderConfig:
    """Field names follow Hugging Face's BertConfig so users recognise them."""

    vocab_size: int = 30522
    hidden_size: int = 768  # d_model
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # h; each head has hidden_size / h dimensions
    intermediate_size: int = 3072  # feed-forward inner size, 4 x hidden in BERT
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segments A and B; 0: none (DistilBERT, MPNet); 1: RoBERTa's one row
    layer_norm_eps: float = 1e-12  # BERT's value; torch's default 1e-5 changes outputs
    hidden_act: str = "gelu"  # exact erf GELU, as BERT
    norm_first: bool = False  # False: post-norm (paper, BERT); True: pre-norm (recent LLMs)
    pad_token_id: int = 0
    pooling: str = "cls"  # how embed() turns token states into one vector
    normalize: bool = False  # L2-normalise pooled embeddings (sentence-transformers' Normalize)
    family: str = "bert"  # Hugging Face model_type: whose checkpoint names weights.py reads
    embedding_size: int | None = None  # ELECTRA: embeddings this wide, normed, then projected to hidden
    position_offset: int = 0  # RoBERTa, MPNet: positions start at pad_token_id + 1, not 0
    relative_attention_buckets: int = 0  # MPNet: 32, a learned bias per head and relative-distance bucket
    share_layers: bool = False  # ALBERT: one layer's weights applied num_hidden_layers times
    num_labels: int = 0  # a sequence classifier's logits (model.ClassificationHead); 0: no head, an embedder

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings")
        bad = {name: getattr(self, name) for name in positive
               if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0}
        if self.embedding_size is not None and (not isinstance(self.embedding_size, int) or self.embedding_size <= 0):
            bad["embedding_size"] = self.embedding_size
        if bad:
            raise ConfigError(f"these config values must be positive integers: {bad}")
        counts = ("type_vocab_size", "position_offset", "relative_attention_buckets", "num_labels")
        bad = {name: getattr(self, name) for name in counts
               if not isinstance(getattr(self, name), int) or getattr(self, name) < 0}
        if bad:
            raise ConfigError(f"these config values must be integers >= 0: {bad}")
        if not isinstance(self.share_layers, bool):
            raise ConfigError(f"share_layers={self.share_layers!r} must be true or false")
        if self.family not in FAMILIES:
            raise ConfigError(f"family={self.family!r} is not one of {FAMILIES}")
        if self.position_offset >= self.max_position_embeddings:
            raise ConfigError(f"position_offset={self.position_offset} leaves no positions of "
                              f"max_position_embeddings={self.max_position_embeddings}")
        if self.relative_attention_buckets % 4:
            raise ConfigError(f"relative_attention_buckets={self.relative_attention_buckets} must be a "
                              "multiple of 4 (half per direction, half of those exact)")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}")
        if not 0 < self.layer_norm_eps < 1:
            raise ConfigError(f"layer_norm_eps={self.layer_norm_eps} must be in (0, 1)")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r} is not one of {POOLINGS}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"pad_token_id={self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_length(self) -> int:
        """The longest sequence the positions allow: RoBERTa's 514 positions hold 512 tokens."""
        return self.max_position_embeddings - self.position_offset

    def check_sequence_length(self, seq_len: int) -> None:
        """A ShapeError for a sequence longer than the position embeddings: the one check of it."""
        if seq_len > self.max_length:
            raise ShapeError(f"sequence length {seq_len} is longer than the model's "
                             f"{self.max_length} positions")

    def replace(self, **changes: Any) -> EncoderConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {unknown}")
        return cls(**values)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> EncoderConfig:
        """Map a Hugging Face config.json of one of FAMILIES onto ours, refusing what we do not implement."""
        family = hf.get("model_type", "bert")
        if family not in FAMILIES:
            raise ConfigError(f"model_type {family!r} is not supported; supported families: {', '.join(FAMILIES)}")
        num_labels = hf_num_labels(hf)
        if family == "distilbert":  # its own key names, no segments, eps fixed in its code
            hf = {"vocab_size": hf.get("vocab_size"), "hidden_size": hf.get("dim"),
                  "num_hidden_layers": hf.get("n_layers"), "num_attention_heads": hf.get("n_heads"),
                  "intermediate_size": hf.get("hidden_dim"), "hidden_act": hf.get("activation", "gelu"),
                  "max_position_embeddings": hf.get("max_position_embeddings"),
                  "pad_token_id": hf.get("pad_token_id"), "layer_norm_eps": 1e-12, "type_vocab_size": 0}
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(
                f"position_embedding_type={hf['position_embedding_type']!r} is not supported "
                "(only absolute position embeddings)")
        act = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu"}.get(hf.get("hidden_act", "gelu"))
        if act is None:
            raise ConfigError(f"hidden_act={hf['hidden_act']!r} is not supported ({ACTIVATIONS})")
        names = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size",
                 "layer_norm_eps", "pad_token_id")
        values = {n: hf[n] for n in names if hf.get(n) is not None}
        values.update(family=family, hidden_act=act, num_labels=num_labels)
        if family in ("roberta", "xlm-roberta", "camembert"):
            values["position_offset"] = values.get("pad_token_id", 1) + 1
        elif family == "electra":  # the projection exists only where the widths differ
            hidden = values.get("hidden_size", cls.hidden_size)
            if hf.get("embedding_size", hidden) != hidden:
                values["embedding_size"] = hf["embedding_size"]
        elif family == "mpnet":
            # MPNet's code fixes the padding index (1) and the bucket count (32) whatever its config says.
            if hf.get("relative_attention_num_buckets", 32) != 32:
                raise ConfigError(f"relative_attention_num_buckets={hf['relative_attention_num_buckets']} is "
                                  "not supported: transformers' MPNet always computes 32 buckets")
            values.update(type_vocab_size=0, position_offset=2, relative_attention_buckets=32)
        elif family == "albert":
            groups = (hf.get("num_hidden_groups", 1), hf.get("inner_group_num", 1))
            if groups != (1, 1):
                raise ConfigError(f"num_hidden_groups, inner_group_num = {groups} is not supported: only "
                                  "ALBERT's one shared layer (1, 1), as every released ALBERT has")
            values.update(embedding_size=hf.get("embedding_size", 128), share_layers=True)
        return cls(**values)


def hf_num_labels(hf: dict[str, Any]) -> int:
    """The logits of a *ForSequenceClassification checkpoint (its id2label's size, as transformers counts
    them), or 0 for any other architecture: the checkpoint says what it is."""
    if not any(str(name).endswith("ForSequenceClassification") for name in hf.get("architectures") or ()):
        return 0
    labels = hf.get("id2label")
    count = len(labels) if isinstance(labels, dict) and labels else hf.get("num_labels", 2)
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"a sequence classifier needs at least one label, not num_labels={count!r}")
    return count


PRESETS: dict[str, EncoderConfig] = {
    "bert-base": EncoderConfig(),
    "bert-large": EncoderConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096),
    "minilm-l6": EncoderConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=1536, pooling="mean", normalize=True),
    # The keras_bert README example: token_num 30000, 12 heads and layers, 768 embed, 3072 ff.
    "keras-bert": EncoderConfig(vocab_size=30000, max_position_embeddings=512),
    "distilbert-base": EncoderConfig(num_hidden_layers=6, type_vocab_size=0, family="distilbert"),
    "roberta-base": EncoderConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                  layer_norm_eps=1e-5, pad_token_id=1, position_offset=2, family="roberta"),
    "xlm-roberta-base": EncoderConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1,
                                      layer_norm_eps=1e-5, pad_token_id=1, position_offset=2,
                                      family="xlm-roberta"),
    # Small enough for tests and quick experiments.
    "tiny": EncoderConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128,
                          max_position_embeddings=128),
}


def preset(name: str) -> EncoderConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
