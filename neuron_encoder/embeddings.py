"""Text in, embeddings out: the library function behind `neuron-encoder embed`."""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import ConfigError
from .text import Tokenizer, load_tokenizer


def embed_texts(model, texts: Sequence[str], tokenizer: Tokenizer | None = None,
                batch_size: int = 32, normalize: bool | None = None) -> torch.Tensor:
    """Pooled embeddings (N, H) of texts, in batches, with `tokenizer` (a compiled artifact's own by
    default); L2-normalised as the model's config says unless `normalize` is given."""
    tokenizer = tokenizer or load_tokenizer(model)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer.encode(texts[start:start + batch_size])
            chunks.append(model.embed(*batch.as_tuple(), normalize=normalize))
    return torch.cat(chunks)


def cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return unit @ unit.T


def embed_model_texts(spec: str, texts: Sequence[str]) -> torch.Tensor:
    """`neuron-encoder embed`: resolve a model spec and embed texts with its own tokenizer."""
    from .models import load_model
    resolved = load_model(spec)
    if resolved.tokenizer is None:
        raise ConfigError(f"{resolved.model_id} has no tokenizer (random weights, or a checkpoint without tokenizer "
                          "files), so it cannot embed text: use 'minilm', a checkpoint directory or a hub id")
    if resolved.task.kind != "embedding":
        raise ConfigError(f"{resolved.model_id} is a {resolved.task.kind}: it scores texts, it does not embed "
                          f"them (use neuron-encoder {'rerank' if resolved.task.kind == 'reranker' else 'classify'})")
    return embed_texts(resolved.encoder, texts, resolved.tokenizer)
