"""EncoderConfig: the shape of a BERT-style encoder, with BERT's real defaults and named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, ShapeError

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class EncoderConfig:
    """Field names follow Hugging Face's BertConfig so users recognise them."""

    vocab_size: int = 30522
    hidden_size: int = 768  # d_model
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # h; each head has hidden_size / h dimensions
    intermediate_size: int = 3072  # feed-forward inner size, 4 x hidden in BERT
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segments A and B
    layer_norm_eps: float = 1e-12  # BERT's value; torch's default 1e-5 changes outputs
    hidden_act: str = "gelu"  # exact erf GELU, as BERT
    norm_first: bool = False  # False: post-norm (paper, BERT); True: pre-norm (recent LLMs)
    pad_token_id: int = 0
    pooling: str = "cls"  # how embed() turns token states into one vector
    normalize: bool = False  # L2-normalise pooled embeddings (sentence-transformers' Normalize)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")
        bad = {name: getattr(self, name) for name in positive
               if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0}
        if bad:
            raise ConfigError(f"these config values must be positive integers: {bad}")
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

    def check_sequence_length(self, seq_len: int) -> None:
        """A ShapeError for a sequence longer than the position embeddings: the one check of it."""
        if seq_len > self.max_position_embeddings:
            raise ShapeError(f"sequence length {seq_len} is longer than the model's "
                             f"{self.max_position_embeddings} positions")

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
        """Map a Hugging Face BERT config.json onto ours, refusing what we do not implement."""
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
        return cls(hidden_act=act, **{n: hf[n] for n in names if hf.get(n) is not None})


PRESETS: dict[str, EncoderConfig] = {
    "bert-base": EncoderConfig(),
    "bert-large": EncoderConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096),
    "minilm-l6": EncoderConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=1536, pooling="mean", normalize=True),
    # The keras_bert README example: token_num 30000, 12 heads and layers, 768 embed, 3072 ff.
    "keras-bert": EncoderConfig(vocab_size=30000, max_position_embeddings=512),
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
