"""Load a compiled artifact and run it on any batch and sequence length its buckets cover.

Requests go to the smallest bucket that fits; inputs are padded to the bucket and the padding is
stripped from the outputs; a batch larger than the largest bucket is split into chunks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from . import artifact, hardware
from .backends import Runner, get_backend
from .compiler import Tolerance, check_bucket
from .config import EncoderConfig
from .errors import ArtifactError, ShapeError
from .model import pool

log = logging.getLogger(__name__)


class CompiledEncoder:
    """A loaded artifact: call it like Encoder.forward, or embed() for pooled vectors."""

    def __init__(self, directory: Path, manifest: dict, runners: dict[tuple[int, int], Runner]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.config = EncoderConfig.from_dict(manifest["model"]["config"])
        self.runners = runners
        self.seq_lens = sorted({s for _, s in runners})
        self.batch_sizes = {s: sorted(b for b, s2 in runners if s2 == s) for s in self.seq_lens}

    @property
    def max_seq_len(self) -> int:
        return self.seq_lens[-1]

    def route(self, batch: int, seq: int) -> list[tuple[int, int, int]]:
        """[(rows, bucket_batch, bucket_seq), ...]: the chunks a (batch, seq) request runs as."""
        bucket_seq = next(s for s in self.seq_lens if s >= seq)
        sizes = self.batch_sizes[bucket_seq]
        chunks, remaining = [], batch
        while remaining > 0:
            fit = next((b for b in sizes if b >= remaining), sizes[-1])
            rows = min(remaining, fit)
            chunks.append((rows, fit, bucket_seq))
            remaining -= rows
        return chunks

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, truncate: bool = False) -> torch.Tensor:
        """Last hidden state (B, T, H) for any B >= 1 and T up to the largest bucket."""
        input_ids, attention_mask, token_type_ids = self._check(input_ids, attention_mask, token_type_ids, truncate)
        B, T = input_ids.shape
        outputs, start = [], 0
        for rows, bucket_batch, bucket_seq in self.route(B, T):
            part = slice(start, start + rows)
            padded = _pad(input_ids[part], attention_mask[part], token_type_ids[part],
                          bucket_batch, bucket_seq, self.config.pad_token_id)
            with torch.inference_mode():
                hidden = self.runners[(bucket_batch, bucket_seq)](*padded)
            outputs.append(hidden[:rows, :T])
            start += rows
        return torch.cat(outputs)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None, truncate: bool = False) -> torch.Tensor:
        """Pooled vectors (B, H), as the model's config says (cls or mean, normalised or not)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self(input_ids, attention_mask, token_type_ids, truncate)
        mask = attention_mask[:, :hidden.shape[1]]
        return pool(hidden, mask, self.config.pooling, self.config.normalize)

    def _check(self, input_ids, attention_mask, token_type_ids, truncate):
        if not isinstance(input_ids, torch.Tensor):
            raise ShapeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dim() != 2:
            raise ShapeError(f"input_ids must be 2-D (batch, sequence), got shape {tuple(input_ids.shape)}")
        if input_ids.numel() == 0:
            raise ShapeError(f"empty input: shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise ShapeError(f"input_ids must be integer token ids, got {input_ids.dtype}")
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tuple(tensor.shape) != tuple(input_ids.shape):
                raise ShapeError(f"{name} has shape {tuple(tensor.shape)}, input_ids {tuple(input_ids.shape)}")
        seq = input_ids.shape[1]
        if seq > self.max_seq_len:
            if not truncate:
                raise ShapeError(f"sequence length {seq} is longer than the largest compiled bucket "
                                 f"({self.max_seq_len}); compile a longer bucket or pass truncate=True")
            input_ids, attention_mask, token_type_ids = (t[:, :self.max_seq_len] for t in
                                                         (input_ids, attention_mask, token_type_ids))
        return input_ids.long(), attention_mask.long(), token_type_ids.long()


def _pad(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor, batch: int, seq: int,
         pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, T = ids.shape
    if (rows, T) == (batch, seq):
        return ids, mask, types
    out_ids = torch.full((batch, seq), pad_id, dtype=torch.long)
    out_mask = torch.zeros((batch, seq), dtype=torch.long)
    out_types = torch.zeros((batch, seq), dtype=torch.long)
    out_ids[:rows, :T], out_mask[:rows, :T], out_types[:rows, :T] = ids, mask, types
    out_mask[rows:, 0] = 1  # filler rows attend to one token, so no row is all-masked (NaN)
    return out_ids, out_mask, out_types


def load_compiled(directory: str | Path, replicas: int | None = None,
                  buckets: Sequence[tuple[int, int]] | None = None) -> CompiledEncoder:
    """Load an artifact after checking every file's sha256 against its manifest.

    `replicas` defaults to the visible NeuronCores for Neuron artifacts (NEURON_RT_VISIBLE_CORES
    honoured) and 1 elsewhere. A cross-compiled artifact is verified here, on its first load on a
    device, against the reference outputs stored beside it, and the manifest records the result.
    """
    directory = Path(directory)
    manifest = artifact.read_manifest(directory)
    artifact.verify_checksums(directory, manifest)
    backend = get_backend(manifest["backend"])
    if not backend.can_run():
        raise ArtifactError(f"{directory} was compiled for {manifest['backend']}"
                            f"{'/' + manifest['target'] if manifest.get('target') else ''}, "
                            "which this host cannot run")
    if replicas is None:
        replicas = hardware.visible_neuron_cores(2 * hardware.neuron_device_count()) \
            if backend.name == "neuron" else 1
    wanted = {tuple(b) for b in buckets} if buckets else None
    runners, unverified = {}, []
    for record in manifest["buckets"]:
        key = (record["batch"], record["seq"])
        if wanted and key not in wanted:
            continue
        runners[key] = backend.load(directory / record["file"], replicas=replicas)
        if not record["numerics"].get("verified"):
            unverified.append(record)
    if not runners:
        raise ArtifactError(f"none of the buckets {sorted(wanted or [])} is in {directory}")
    if unverified:
        _verify_on_first_load(directory, manifest, runners, unverified)
    return CompiledEncoder(directory, manifest, runners)


def _verify_on_first_load(directory: Path, manifest: dict, runners: dict, records: list[dict]) -> None:
    references = torch.load(directory / "reference.pt", weights_only=True)
    tolerance = Tolerance(**manifest["tolerance"])
    for record in records:
        record["numerics"] = check_bucket(runners[(record["batch"], record["seq"])], references[record["name"]],
                                          manifest["precision"], tolerance, record["name"])
        log.info("verified %s on first load: max abs %.2e, min cosine %.6f", record["name"],
                 record["numerics"]["max_abs"], record["numerics"]["min_cosine"])
    try:
        artifact.write_json_atomic(directory / artifact.MANIFEST, manifest)
    except OSError as exc:  # a read-only artifact still runs; it is verified again next time
        log.warning("could not record the verification in %s: %s", directory, exc)
