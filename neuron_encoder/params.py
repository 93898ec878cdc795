"""Parameter accounting per component, like keras' model.summary()."""

from __future__ import annotations

from torch import nn

from .config import EncoderConfig


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def breakdown(config: EncoderConfig) -> dict[str, int]:
    """Counts per component, read off a real (meta-device) model so they cannot drift from it.

    `attention`, `feed_forward` and `layer` are for one layer; `total` is every parameter of our
    Encoder, which equals the family's Hugging Face base model without its pooler; `pooler` is what
    a default tanh pooler (BERT, RoBERTa, MPNet) would add, shown for comparison and not part of
    `total`. What only some families have counts 0 elsewhere: ELECTRA's `embedding_projection`,
    MPNet's `relative_bias` (one table every layer shares, counted once), segments (none in
    DistilBERT and MPNet). ALBERT's one shared layer is counted once in `all_layers`.
    """
    from .model import Encoder
    import torch
    with torch.device("meta"):  # no memory, no initialisation cost, even for bert-large
        model = Encoder(config)
    layer = model.layers[0]
    emb = model.embeddings
    h = config.hidden_size
    result = {
        "token_embeddings": count(emb.token),
        "position_embeddings": count(emb.position),
        "segment_embeddings": count(emb.segment),
        "embedding_norm": count(emb.norm),
        "embedding_projection": count(emb.project),
        "embeddings": count(emb),
        "attention": count(layer.attention),
        "attention_norm": count(layer.attention_norm),
        "feed_forward": count(layer.feed_forward),
        "feed_forward_norm": count(layer.feed_forward_norm),
        "layer": count(layer),
        "layers": config.num_hidden_layers,
        "all_layers": count(model.layers),
        "final_norm": count(model.final_norm),
        "relative_bias": count(model.relative_bias),
        "total": model.get_num_params(),
        "pooler": 0 if config.family in ("distilbert", "electra") else h * h + h,  # ALBERT's too
    }
    return result


def format_table(name: str, config: EncoderConfig, counts: dict[str, int]) -> str:
    h, ff, nh = config.hidden_size, config.intermediate_size, config.num_attention_heads
    parts = [("token", "token_embeddings"), ("position", "position_embeddings"),
             ("segment", "segment_embeddings"), ("norm", "embedding_norm"),
             (f"projection {config.embedding_size}->{h}", "embedding_projection")]
    rows = [
        ("embeddings", counts["embeddings"],
         " + ".join(f"{label} {counts[key]:,}" for label, key in parts if counts[key])
         + ("" if config.type_vocab_size else " (no segments)")),
        ("per layer: multi-head attention", counts["attention"],
         f"4 x {h}x{h} weights (W_Q, W_K, W_V, W_O) + 4 x {h} biases; {nh} heads of {h // nh}"),
        ("per layer: attention add & norm", counts["attention_norm"], f"LayerNorm gamma, beta ({h})"),
        ("per layer: feed-forward", counts["feed_forward"],
         f"{h}x{ff} + {ff} + {ff}x{h} + {h}"),
        ("per layer: feed-forward add & norm", counts["feed_forward_norm"], f"LayerNorm ({h})"),
        ("one layer", counts["layer"], ""),
        (f"{counts['layers']} layers", counts["all_layers"],
         "one layer's weights, shared by every application (counted once)" if config.share_layers else ""),
    ]
    if counts["relative_bias"]:
        rows.append(("relative position bias (all layers share it)", counts["relative_bias"],
                     f"{config.relative_attention_buckets} buckets x {nh} heads"))
    if counts["final_norm"]:
        rows.append(("final norm (pre-norm only)", counts["final_norm"], ""))
    rows.append(("total", counts["total"], f"= Hugging Face's {config.family} base model without a pooler"))
    if counts["pooler"]:
        rows.append(("(the tanh pooler, not included)", counts["pooler"], f"{h}x{h} + {h}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{name} ({config.family}): hidden {h}, {counts['layers']} layers, {nh} heads, feed-forward {ff}, "
             f"{'pre' if config.norm_first else 'post'}-norm",
             f"{'component':<{width}}  {'parameters':>13}  detail",
             "-" * (width + 30)]
    lines += [f"{label:<{width}}  {n:>13,}  {detail}" for label, n, detail in rows]
    return "\n".join(lines)
