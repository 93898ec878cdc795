"""Load a compiled artifact and run it on any batch and sequence length its buckets cover.

Requests go to the smallest bucket that fits; inputs are padded to the bucket and the padding is
stripped from the outputs; a batch larger than the largest bucket is split into chunks. Backends
without fixed shapes (the CPU) run each chunk at its own shape instead of padding it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from . import artifact, hardware
from .artifact import bucket_name
from .backends import Backend, LoadedBucket, get_backend
from .config import EncoderConfig
from .errors import ArtifactError, ConfigError, ShapeError
from .files import write_json_atomic
from .model import pool
from .numerics import Tolerance, check_bucket
from .task import Task
from .text import Tokenizer, has_tokenizer

log = logging.getLogger(__name__)


class CompiledEncoder:
    """A loaded artifact: call it like Encoder.forward, or embed() for pooled vectors.

    It holds devices (NeuronCores, GPU memory) and process settings until close(); use it as a
    context manager, or call close(), to give them back before the process ends.
    """

    def __init__(self, directory: Path, manifest: dict, buckets: dict[tuple[int, int], LoadedBucket],
                 fixed_shapes: bool = True) -> None:
        self.directory = directory
        self.fixed_shapes = fixed_shapes  # False (the CPU): inputs run at their own shape, unpadded
        self.manifest = manifest
        self.config = EncoderConfig.from_dict(manifest["model"]["config"])
        self.task = Task.from_dict(manifest.get("task"))  # embedding, or labels and scores
        self.buckets = buckets
        self.seq_lens = sorted({s for _, s in buckets})
        self.batch_sizes = {s: sorted(b for b, s2 in buckets if s2 == s) for s in self.seq_lens}
        self._routes: dict[tuple[int, int], tuple[tuple[int, int, int], ...]] = {}
        tokenizer_dir = directory / "tokenizer"
        self.tokenizer = (Tokenizer(tokenizer_dir, max_length=self.max_seq_len)
                          if has_tokenizer(tokenizer_dir) else None)  # None: random weights, ids only

    @property
    def max_seq_len(self) -> int:
        return self.seq_lens[-1]

    @property
    def placement(self) -> dict[str, tuple[int, ...]]:
        """The NeuronCores (relative to the visible ones) each bucket's copies hold, e.g. {"b8_s128": (0, 1)};
        runtime information, never written to the manifest. Empty tuples off Neuron."""
        return {bucket_name(batch, seq): bucket.cores for (batch, seq), bucket in sorted(self.buckets.items())}

    def route(self, batch: int, seq: int) -> tuple[tuple[int, int, int], ...]:
        """((rows, bucket_batch, bucket_seq), ...): the chunks a (batch, seq) request runs as.

        Memoised per (batch, seq): the hot path asks the same few shapes again and again.
        """
        chunks = self._routes.get((batch, seq))
        if chunks is None:
            chunks = self._routes[(batch, seq)] = self._plan_route(batch, seq)
        return chunks

    def _plan_route(self, batch: int, seq: int) -> tuple[tuple[int, int, int], ...]:
        bucket_seq = next(s for s in self.seq_lens if s >= seq)
        sizes = self.batch_sizes[bucket_seq]
        chunks, remaining = [], batch
        while remaining > 0:
            fit = next((b for b in sizes if b >= remaining), sizes[-1])
            rows = min(remaining, fit)
            chunks.append((rows, fit, bucket_seq))
            remaining -= rows
        return tuple(chunks)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, truncate: bool = False) -> torch.Tensor:
        """Last hidden state (B, T, H), or a classifier's logits (B, L), for any B >= 1 and T up to the
        largest bucket."""
        input_ids, attention_mask, token_type_ids = self._check(input_ids, attention_mask, token_type_ids, truncate)
        B, T = input_ids.shape
        chunks = self.route(B, T)
        with torch.inference_mode():
            if len(chunks) == 1:  # the common case: one bucket, no copy of the output
                _, bucket_batch, bucket_seq = chunks[0]
                return self._run(input_ids, attention_mask, token_type_ids, bucket_batch, bucket_seq)
            outputs, start = [], 0
            for rows, bucket_batch, bucket_seq in chunks:
                part = slice(start, start + rows)
                outputs.append(self._run(input_ids[part], attention_mask[part], token_type_ids[part],
                                         bucket_batch, bucket_seq))
                start += rows
            return torch.cat(outputs)

    def _run(self, ids, mask, types, bucket_batch: int, bucket_seq: int) -> torch.Tensor:
        if not self.fixed_shapes:  # padding to the bucket would only add work
            return self.buckets[(bucket_batch, bucket_seq)](ids, mask, types)
        rows, T = ids.shape
        padded = _pad(ids, mask, types, bucket_batch, bucket_seq, self.config.pad_token_id)
        out = self.buckets[(bucket_batch, bucket_seq)](*padded)  # hidden states (B, T, H) or logits (B, L)
        return out[:rows, :T] if out.dim() == 3 else out[:rows]

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None, truncate: bool = False,
              normalize: bool | None = None) -> torch.Tensor:
        """Pooled vectors (B, H), as the model's config says (cls or mean), L2-normalised as it says
        unless `normalize` is given (a server normalises per request)."""
        if self.task.kind != "embedding":
            raise ConfigError(f"{self.directory} is a {self.task.kind}: it scores, it does not embed (use logits)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self(input_ids, attention_mask, token_type_ids, truncate)
        mask = attention_mask[:, :hidden.shape[1]]
        return pool(hidden, mask, self.config.pooling,
                    self.config.normalize if normalize is None else normalize)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None, truncate: bool = False) -> torch.Tensor:
        """A classifier's or reranker's logits (B, L), its head compiled into every bucket; task.scores
        turns them into the scores its manifest's task says."""
        if self.task.kind == "embedding":
            raise ConfigError(f"{self.directory} is an embedding model: it has no logits (use embed)")
        return self(input_ids, attention_mask, token_type_ids, truncate)

    def close(self) -> None:
        """Free what the buckets hold (NeuronCores, GPU memory, process settings); calls fail after."""
        for bucket in self.buckets.values():
            bucket.close()

    def __enter__(self) -> CompiledEncoder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

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
    """Inputs padded to a (batch, seq) bucket, in one allocation; filler rows attend to one token,
    so no row is all-masked (which would give NaN)."""
    rows, T = ids.shape
    if (rows, T) == (batch, seq):
        return ids, mask, types
    out = torch.zeros((3, batch, seq), dtype=torch.long)  # ids, mask, types
    out[0].fill_(pad_id)
    out[0, :rows, :T], out[1, :rows, :T], out[2, :rows, :T] = ids, mask, types
    out[1, rows:, 0] = 1
    return out[0], out[1], out[2]


def load_compiled(directory: str | Path, replicas: int | None = None,
                  buckets: Sequence[tuple[int, int]] | None = None, start_core: int = 0) -> CompiledEncoder:
    """Load an artifact after checking every file's sha256 against its manifest, and that this host
    can run it (a Neuron artifact for another NeuronCore generation or compiler major version is
    refused, naming both; smaller differences are logged as warnings).

    Neuron: one copy of each bucket on each of the visible NeuronCores start_core .. start_core +
    replicas - 1 (`replicas` defaults to all of them from start_core; NEURON_RT_VISIBLE_CORES honoured);
    a server with one replica thread per core loads with replicas=1, start_core=i, and
    CompiledEncoder.placement says which cores it holds. Elsewhere both are ignored. A cross-compiled
    artifact is verified here, on its first load on a device, against the reference outputs stored
    beside it, and the manifest records the result.
    """
    directory = Path(directory)
    manifest = artifact.read_manifest(directory)
    artifact.verify_checksums(directory, manifest)
    backend = _host_backend(directory, manifest)
    if replicas is None:
        replicas = max(1, hardware.neuron_core_count() - start_core) if backend.name == "neuron" else 1
    wanted = {tuple(b) for b in buckets} if buckets else None
    loaded: dict[tuple[int, int], LoadedBucket] = {}
    unverified = []
    try:
        for record in manifest["buckets"]:
            key = (record["batch"], record["seq"])
            if wanted and key not in wanted:
                continue
            loaded[key] = backend.load(directory / record["file"], manifest["precision"], replicas=replicas,
                                       start_core=start_core)
            if not record["numerics"].get("verified"):
                unverified.append(record)
        if not loaded:
            raise ArtifactError(f"none of the buckets {sorted(wanted or [])} is in {directory}")
        if unverified:
            _verify_on_first_load(directory, manifest, loaded, unverified)
    except BaseException:
        for bucket in loaded.values():  # a failed load gives back the cores it took
            bucket.close()
        raise
    return CompiledEncoder(directory, manifest, loaded, fixed_shapes=backend.fixed_shapes)


def _host_backend(directory: Path, manifest: dict) -> Backend:
    """The artifact's backend, once this host is known to run it; warnings are logged, not raised."""
    backend = get_backend(manifest["backend"])
    problem = backend.run_problem()
    if problem:
        raise ArtifactError(f"{directory} was compiled for {manifest['backend']}"
                            f"{'/' + manifest['target'] if manifest.get('target') else ''}, "
                            f"which this host cannot run: {problem}")
    try:
        for note in backend.check_artifact(manifest):
            log.warning("%s: %s", directory, note)
    except ArtifactError as error:
        raise ArtifactError(f"{directory}: {error}") from None
    return backend


def _verify_on_first_load(directory: Path, manifest: dict, loaded: dict, records: list[dict]) -> None:
    references = torch.load(directory / "reference.pt", weights_only=True)
    tolerance = Tolerance(**manifest["tolerance"])
    for record in records:
        record["numerics"] = check_bucket(loaded[(record["batch"], record["seq"])], references[record["name"]],
                                          manifest["precision"], tolerance, record["name"])
        log.info("verified %s on first load: max abs %.2e, min cosine %.6f", record["name"],
                 record["numerics"]["max_abs"], record["numerics"]["min_cosine"])
    try:
        write_json_atomic(directory / artifact.MANIFEST, manifest)
    except OSError as exc:  # a read-only artifact still runs; it is verified again next time
        log.warning("could not record the verification in %s: %s", directory, exc)
