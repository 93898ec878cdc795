"""Text in, embeddings out: the library function behind `neuron-encoder embed`."""

from __future__ import annotations

from typing import Sequence

import torch

from .text import Tokenizer, load_tokenizer


def embed_texts(model, texts: Sequence[str], tokenizer: Tokenizer | None = None,
                batch_size: int = 32) -> torch.Tensor:
    """Pooled embeddings (N, H) of texts, in batches, with the checkpoint's own tokenizer."""
    tokenizer = tokenizer or load_tokenizer(model)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer.encode(texts[start:start + batch_size])
            chunks.append(model.embed(*batch.as_tuple()))
    return torch.cat(chunks)


def cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return unit @ unit.T
