"""The Transformer encoder of "Attention Is All You Need", as BERT uses it, built bottom-up.

attention -> multi-head attention -> feed-forward -> add & norm -> layer -> embeddings -> encoder.
There is no data-dependent control flow, so the model traces at fixed shapes (the Neuron compiler's
requirement) and the traced graph computes exactly what eager does. Inference only: no dropout.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 keep: torch.Tensor | None, fused: bool = True) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_k)) V over (B, nh, T, hs) tensors; `keep` is (B, 1, 1, T) bool.

    `fused` uses torch's kernel (fast on CPU and CUDA); the written-out form is what backends
    that do not know aten::scaled_dot_product_attention (the Neuron compiler) are given.
    """
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) @ v  # (B, nh, T, hs)


class MultiHeadAttention(nn.Module):
    """h heads of attention, their outputs concatenated and projected by W_O.

    W_Q, W_K and W_V (each H x H, head i using columns i*hs:(i+1)*hs) are stacked in one (3H x H)
    `qkv` projection: one matrix multiply instead of three, the same parameters and arithmetic.
    """

    def __init__(self, config: EncoderConfig, fused: bool = True) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.fused = fused  # fixed at construction: see Encoder.with_fused_attention
        h = config.hidden_size
        self.qkv = nn.Linear(h, 3 * h)  # [W_Q; W_K; W_V]
        self.out = nn.Linear(h, h)  # W_O

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self.out(self.heads(x, keep))

    def heads(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Every head's attention, concatenated, before W_O (a backend may fuse W_O with the residual add)."""
        B, T, H = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, T, H)
        q = q.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        y = scaled_dot_product_attention(q, k, v, keep, self.fused)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, H)  # concatenate the heads: (B, T, H)


class FeedForward(nn.Module):
    """Position-wise: the same two-layer network applied to every token."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"),
                           "relu": nn.ReLU()}[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))


class EncoderLayer(nn.Module):
    """One sublayer of attention and one of feed-forward, each wrapped in Add & Norm.

    Post-norm (paper, BERT): x = norm(x + sublayer(x)).
    Pre-norm (norm_first):   x = x + sublayer(norm(x)).
    """

    def __init__(self, config: EncoderConfig, fused_attention: bool = True) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.attention = MultiHeadAttention(config, fused_attention)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attention(self.attention_norm(x), keep)
            return x + self.feed_forward(self.feed_forward_norm(x))
        x = self.attention_norm(x + self.attention(x, keep))
        return self.feed_forward_norm(x + self.feed_forward(x))


class Embeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.hidden_size,
                                  padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.segment = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings),
                             persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.size(1)
        x = self.token(input_ids) + self.position(self.position_ids[:T]) + self.segment(token_type_ids)
        return self.norm(x)  # (B, T, H)


class Encoder(nn.Module):
    """A BERT-style encoder: forward() returns the last hidden state (B, T, H).

    `fused_attention` picks torch's attention kernel (True) or the written-out form (False) for
    every layer, once, at construction; with_fused_attention gives a copy with the other form.
    """

    def __init__(self, config: EncoderConfig, fused_attention: bool = True) -> None:
        super().__init__()
        self.config = config
        self.fused_attention = fused_attention
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, fused_attention)
                                    for _ in range(config.num_hidden_layers))
        # Pre-norm stacks end with a norm, or the last residual stream is never normalised.
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.norm_first else None)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation, so random presets have realistic activations for speed work.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, keep)
        return x if self.final_norm is None else self.final_norm(x)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None, normalize: bool | None = None) -> torch.Tensor:
        """One vector per sequence, pooled as the config says, L2-normalised as it says unless
        `normalize` is given: (B, H)."""
        hidden = self.forward(input_ids, attention_mask, token_type_ids)
        return pool(hidden, attention_mask, self.config.pooling,
                    self.config.normalize if normalize is None else normalize)

    def with_fused_attention(self, fused: bool) -> Encoder:
        """This encoder with the other attention form, sharing its parameters (no copy): a backend
        that needs the written-out attention traces the copy and leaves the caller's model alone."""
        if fused == self.fused_attention:
            return self
        with torch.device("meta"):  # no memory: the parameters are assigned below
            twin = Encoder(self.config, fused_attention=fused)
        twin.load_state_dict(self.state_dict(), assign=True)
        twin.embeddings.position_ids = self.embeddings.position_ids  # not in the state dict
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("name_or_path", "checkpoint_dir")})
        return twin.train(self.training)

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "minilm") -> Encoder:
        """Load a BERT-architecture checkpoint: a directory, `minilm`, or a Hugging Face hub id.

        weights.py reads the checkpoint into a config and a state dict; every key and shape is
        checked against this model before it is loaded.
        """
        from . import weights  # lazy: importing the model (e.g. to run an artifact) needs no checkpoint code
        directory = weights.resolve(name_or_path)
        model = cls(weights.read_config(directory))
        model.load_state_dict(weights.convert_hf_state_dict(weights.read_state_dict(directory), model), strict=True)
        model.checkpoint_dir = directory
        model.name_or_path = str(name_or_path)
        return model.eval()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str,
         normalize: bool) -> torch.Tensor:
    """CLS token or the mean over unmasked tokens, optionally L2-normalised: (B, T, H) -> (B, H)."""
    if mode == "cls":
        pooled = hidden[:, 0]
    else:
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled
