"""The Transformer encoder of "Attention Is All You Need", as BERT uses it, built bottom-up.

attention -> multi-head attention -> feed-forward -> add & norm -> layer -> embeddings -> encoder.
The other families are this encoder with small differences, each switched on by one config field:
DistilBERT has no segment embeddings; RoBERTa (XLM-R, CamemBERT) counts positions from an offset;
ELECTRA projects narrower embeddings up to the hidden size; MPNet adds a relative position bias to
every layer's attention scores; ALBERT projects its embeddings as ELECTRA does and applies one
layer's weights num_hidden_layers times.
A sequence classifier (config.num_labels > 0) ends in ClassificationHead, and forward returns its logits.
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
from .errors import ConfigError


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 keep: torch.Tensor | None, fused: bool = True) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_k) + bias) V over (B, nh, T, hs) tensors; `keep` is a (B, 1, 1, T) bool
    mask of the keys to attend to, or a float bias added to the scores (MPNet's, with the mask in it).

    `fused` uses torch's kernel (fast on CPU and CUDA); the written-out form is what backends
    that do not know aten::scaled_dot_product_attention (the Neuron compiler) are given.
    """
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    if keep is not None and keep.dtype == torch.bool:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    elif keep is not None:
        scores = scores + keep
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
    """Token + position + segment embeddings, then LayerNorm.

    Families differ here: without segments (type_vocab_size 0); with one segment row added to every
    token (RoBERTa: 1, so any type ids mean segment 0); with positions from an offset (RoBERTa counts
    from pad_token_id + 1: with right padding, real tokens sit at offset + arange(T)); narrower
    (ELECTRA's and ALBERT's embedding_size, normed at that width, then projected to hidden).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.token = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, width)
        self.segment = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.project = nn.Linear(width, config.hidden_size) if config.embedding_size else None
        self.register_buffer("position_ids",
                             torch.arange(config.position_offset, config.max_position_embeddings),
                             persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.size(1)
        x = self.token(input_ids) + self.position(self.position_ids[:T])
        if self.segment is not None:
            x = x + (self.segment(token_type_ids) if self.segment.num_embeddings > 1 else self.segment.weight[0])
        x = self.norm(x)
        return x if self.project is None else self.project(x)  # (B, T, H)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int = 128) -> torch.Tensor:
    """MPNet's (T5's) bucket of each (query i, key j): half the buckets per direction, the first half
    of those exact distances, the rest log-spaced up to max_distance: (T, T) int64."""
    position = torch.arange(length)
    n = position[:, None] - position[None, :]  # i - j: (T, T)
    half = num_buckets // 2
    exact = half // 2
    direction = (n < 0).long() * half
    n = n.abs()
    far = exact + (torch.log(n.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    return direction + torch.where(n < exact, n, far.clamp(max=half - 1))


class RelativePositionBias(nn.Module):
    """MPNet: one learned bias per head and bucket of relative distance, added to the attention scores
    of every layer. A bucket depends on j - i alone, so the buckets of the longest sequence, sliced,
    serve every length: a buffer, nothing computed at run time, shapes static for Neuron."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.table = nn.Embedding(config.relative_attention_buckets, config.num_attention_heads)
        self.register_buffer("buckets", relative_position_buckets(
            config.max_position_embeddings, config.relative_attention_buckets), persistent=False)

    def forward(self, T: int) -> torch.Tensor:
        return self.table(self.buckets[:T, :T]).permute(2, 0, 1)[None]  # (T, T, nh) -> (1, nh, T, T)


# The families' classification heads differ in one thing, the activation between their two linears.
HEAD_ACTIVATIONS = {"bert": "tanh", "albert": "tanh", "roberta": "tanh", "xlm-roberta": "tanh",
                    "camembert": "tanh", "mpnet": "tanh", "distilbert": "relu", "electra": "gelu"}


class ClassificationHead(nn.Module):
    """Sequence classification from the first token ([CLS], <s>): dense, activation, out: (B, T, H) -> (B, L).

    Every family's head has this shape: BERT's and ALBERT's dense is their tanh pooler, DistilBERT's its
    pre_classifier with ReLU, RoBERTa's (XLM-R, CamemBERT, MPNet) classifier.dense with tanh, ELECTRA's the
    same with GELU (weights.py holds the names). Their dropout acts in training only, so it is left out.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = {"tanh": nn.Tanh(), "relu": nn.ReLU(), "gelu": nn.GELU()}[HEAD_ACTIVATIONS[config.family]]
        self.out = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.activation(self.dense(hidden[:, 0])))  # (B, H) -> (B, L)


class Encoder(nn.Module):
    """A BERT-style encoder: forward() returns the last hidden state (B, T, H), or a classifier's logits
    (B, num_labels) when the config has labels: what a backend compiles is what the model is for.

    `fused_attention` picks torch's attention kernel (True) or the written-out form (False) for
    every layer, once, at construction; with_fused_attention gives a copy with the other form.
    """

    def __init__(self, config: EncoderConfig, fused_attention: bool = True) -> None:
        super().__init__()
        self.config = config
        self.fused_attention = fused_attention
        self.embeddings = Embeddings(config)
        # ALBERT: one layer whose weights every one of the num_hidden_layers applications shares.
        self.layers = nn.ModuleList(EncoderLayer(config, fused_attention)
                                    for _ in range(1 if config.share_layers else config.num_hidden_layers))
        self.relative_bias = RelativePositionBias(config) if config.relative_attention_buckets else None
        # Pre-norm stacks end with a norm, or the last residual stream is never normalised.
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.norm_first else None)
        self.head = ClassificationHead(config) if config.num_labels else None
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
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        return hidden if self.head is None else self.head(hidden)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden state (B, T, H), a classifier's too."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)
        if self.relative_bias is not None:  # one bias for every layer, the padding mask folded in
            bias = self.relative_bias(input_ids.size(1)).to(x.dtype)  # (1, nh, T, T)
            keep = bias if keep is None else bias.masked_fill(~keep, torch.finfo(x.dtype).min)  # (B, nh, T, T)
        for i in range(self.config.num_hidden_layers):
            x = self.layers[i % len(self.layers)](x, keep)  # layers[0] every time when they are shared
        return x if self.final_norm is None else self.final_norm(x)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None, normalize: bool | None = None) -> torch.Tensor:
        """One vector per sequence, pooled as the config says, L2-normalised as it says unless
        `normalize` is given: (B, H)."""
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        return pool(hidden, attention_mask, self.config.pooling,
                    self.config.normalize if normalize is None else normalize)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """A classifier's logits (B, num_labels); a ShapeError for a model without a head."""
        if self.head is None:
            raise ConfigError("this model has no classification head (num_labels 0): it embeds, it does not "
                             "classify")
        return self.forward(input_ids, attention_mask, token_type_ids)

    def with_fused_attention(self, fused: bool) -> Encoder:
        """This encoder with the other attention form, sharing its parameters (no copy): a backend
        that needs the written-out attention traces the copy and leaves the caller's model alone."""
        if fused == self.fused_attention:
            return self
        with torch.device("meta"):  # no memory: the parameters are assigned below
            twin = Encoder(self.config, fused_attention=fused)
        state = self.state_dict()
        twin.load_state_dict(state, assign=True)
        for name, buffer in self.named_buffers():  # non-persistent ones (position ids, MPNet's buckets)
            if name not in state:
                owner, _, leaf = name.rpartition(".")
                setattr(twin.get_submodule(owner), leaf, buffer)
        return twin.train(self.training)

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "minilm") -> Encoder:
        """Load a checkpoint of one of config.FAMILIES: a directory, `minilm`, or a Hugging Face hub id.

        weights.py reads the checkpoint into a config and a state dict; every key and shape is
        checked against this model before it is loaded. The tokenizer beside it and where it came
        from are models.load_model's record, not the model's.
        """
        from . import weights  # lazy: importing the model (e.g. to run an artifact) needs no checkpoint code
        directory = weights.resolve(name_or_path)
        model = cls(weights.read_config(directory))
        model.load_state_dict(weights.convert_hf_state_dict(weights.read_state_dict(directory), model), strict=True)
        return model.eval()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str,
         normalize: bool) -> torch.Tensor:
    """CLS token, or the mean or the maximum over unmasked tokens, optionally L2-normalised:
    (B, T, H) -> (B, H)."""
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        if attention_mask is not None:
            hidden = hidden.masked_fill(attention_mask[..., None] == 0, torch.finfo(hidden.dtype).min)
        pooled = hidden.max(dim=1).values
    else:
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled
