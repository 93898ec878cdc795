"""Parameter accounting per component, like keras' model.summary()."""

from __future__ import annotations

from torch import nn

from .config import EncoderConfig


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def breakdown(config: EncoderConfig) -> dict[str, int]:
    """Counts per component, read off a real (meta-device) model so they cannot drift from it.

    `attention`, `feed_forward` and `layer` are for one layer; `total` is every parameter of our
    Encoder, which equals Hugging Face BertModel(add_pooling_layer=False); `pooler` is what
    BertModel's default tanh pooler would add, shown for comparison and not part of `total`.
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
        "embeddings": count(emb),
        "attention": count(layer.attention),
        "attention_norm": count(layer.attention_norm),
        "feed_forward": count(layer.feed_forward),
        "feed_forward_norm": count(layer.feed_forward_norm),
        "layer": count(layer),
        "layers": config.num_hidden_layers,
        "all_layers": count(model.layers),
        "final_norm": count(model.final_norm),
        "total": model.get_num_params(),
        "pooler": h * h + h,
    }
    return result


def format_table(name: str, config: EncoderConfig, counts: dict[str, int]) -> str:
    h, ff, nh = config.hidden_size, config.intermediate_size, config.num_attention_heads
    rows = [
        ("embeddings", counts["embeddings"],
         f"token {counts['token_embeddings']:,} + position {counts['position_embeddings']:,} + "
         f"segment {counts['segment_embeddings']:,} + norm {counts['embedding_norm']:,}"),
        ("per layer: multi-head attention", counts["attention"],
         f"4 x {h}x{h} weights (W_Q, W_K, W_V, W_O) + 4 x {h} biases; {nh} heads of {h // nh}"),
        ("per layer: attention add & norm", counts["attention_norm"], f"LayerNorm gamma, beta ({h})"),
        ("per layer: feed-forward", counts["feed_forward"],
         f"{h}x{ff} + {ff} + {ff}x{h} + {h}"),
        ("per layer: feed-forward add & norm", counts["feed_forward_norm"], f"LayerNorm ({h})"),
        ("one layer", counts["layer"], ""),
        (f"{counts['layers']} layers", counts["all_layers"], ""),
    ]
    if counts["final_norm"]:
        rows.append(("final norm (pre-norm only)", counts["final_norm"], ""))
    rows.append(("total", counts["total"], "= Hugging Face BertModel(add_pooling_layer=False)"))
    rows.append(("(BertModel's pooler, not included)", counts["pooler"], f"{h}x{h} + {h}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{name}: hidden {h}, {counts['layers']} layers, {nh} heads, feed-forward {ff}, "
             f"{'pre' if config.norm_first else 'post'}-norm",
             f"{'component':<{width}}  {'parameters':>13}  detail",
             "-" * (width + 30)]
    lines += [f"{label:<{width}}  {n:>13,}  {detail}" for label, n, detail in rows]
    return "\n".join(lines)
