"""Load a compiled artifact and run it on any batch and sequence length its buckets cover.

The artifact's ShapePolicy (shapes.py) plans each set of inputs: the smallest bucket that fits, a batch
larger than the largest bucket split into chunks, padded to the bucket where the backend fixes shapes
and run at its own shape where it does not (the CPU). Token-id rows (a tokenizer's output) are padded
once, straight into the shape they run at; padding is stripped from the outputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import artifact, hardware
from .artifact import bucket_name
from .backends import Backend, LoadedBucket, get_backend
from .config import EncoderConfig
from .errors import ArtifactError, ConfigError, ShapeError
from .files import write_json_atomic
from .model import pool
from .numerics import Tolerance, check_bucket
from .shapes import Call, Plan, ShapePolicy
from .task import Task
from .text import Batch, Tokenizer, has_tokenizer, pad_rows

log = logging.getLogger(__name__)

WARMUP_RUNS = 3  # per bucket: TorchScript's profiling executor (and oneDNN's fuser) settle after two
TIMED_RUNS = 2  # then timed: the faster is the bucket's cost


class CompiledEncoder:
    """A loaded artifact: call it like Encoder.forward, or embed() for pooled vectors; plan() and
    embed_rows() for token-id rows that are not padded yet (the server).

    It holds devices (NeuronCores, GPU memory) and process settings until close(); use it as a
    context manager, or call close(), to give them back before the process ends.
    """

    def __init__(self, directory: Path, manifest: dict, buckets: dict[tuple[int, int], LoadedBucket],
                 fixed_shapes: bool = True) -> None:
        self.directory = directory
        self.manifest = manifest
        self.config = EncoderConfig.from_dict(manifest["model"]["config"])
        self.task = Task.from_dict(manifest.get("task"))  # embedding, or labels and scores
        self.buckets = buckets
        self.shapes = ShapePolicy(buckets, fixed=fixed_shapes)
        self.warm_ms: dict[tuple[int, int], float] = {}  # each bucket's fastest warm-up call, once warm_up ran
        tokenizer_dir = directory / "tokenizer"
        self.tokenizer = (Tokenizer(tokenizer_dir, max_length=self.max_seq_len)
                          if has_tokenizer(tokenizer_dir) else None)  # None: random weights, ids only

    @property
    def max_seq_len(self) -> int:
        return self.shapes.max_seq_len

    @property
    def placement(self) -> dict[str, tuple[int, ...]]:
        """The NeuronCores (relative to the visible ones) each bucket's copies hold, e.g. {"b8_s128": (0, 1)};
        runtime information, never written to the manifest. Empty tuples off Neuron."""
        return {bucket_name(batch, seq): bucket.cores for (batch, seq), bucket in sorted(self.buckets.items())}

    def plan(self, rows: Sequence[Sequence[int]]) -> Plan:
        """How token-id rows run: which calls at which shapes, their cost, the tokens they compute."""
        if not rows:
            raise ShapeError("no inputs to plan")
        lengths = [len(ids) for ids in rows]
        if max(lengths) > self.max_seq_len:
            raise ShapeError(f"an input has {max(lengths)} tokens, more than the largest compiled bucket "
                             f"({self.max_seq_len}); cut it first")
        return self.shapes.plan(lengths)

    def embed_rows(self, rows: Sequence[Sequence[int]], normalize: bool | None = None,
                   plan: Plan | None = None) -> torch.Tensor:
        """Pooled vectors (N, H) of token-id rows, each padded once, to the shape its call runs at."""
        self._need("embedding", "it scores, it does not embed (use logits_rows)")
        normalize = self.config.normalize if normalize is None else normalize
        return self.run_rows(rows, plan, lambda hidden, mask: pool(hidden, mask, self.config.pooling, normalize))

    def logits_rows(self, rows: Sequence[Sequence[int]], plan: Plan | None = None) -> torch.Tensor:
        """A classifier's or reranker's logits (N, L) of token-id rows (pairs already joined by the tokenizer)."""
        self._need("scorer", "it has no logits (use embed_rows)")
        return self.run_rows(rows, plan, lambda logits, mask: logits)

    def run_rows(self, rows: Sequence[Sequence[int]], plan: Plan | None,
                 finish: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """finish(output, mask) of each planned call, its rows padded once, in order: the one loop behind
        embed_rows, logits_rows and warm_up."""
        plan = plan or self.plan(rows)
        outputs = []
        with torch.inference_mode():
            for call in plan.calls:
                part = rows[call.start:call.start + call.rows]
                inputs = pad_rows(part, *call.shape, self.config.pad_token_id, _types(part))
                out = self.buckets[call.bucket](*inputs.as_tuple())[:call.rows]
                outputs.append(finish(out, inputs.attention_mask[:call.rows]))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _need(self, kind: str, otherwise: str) -> None:
        """An error unless this artifact is an embedder (kind "embedding") or a classifier/reranker ("scorer")."""
        embedding = self.task.kind == "embedding"
        if embedding != (kind == "embedding"):
            what = "an embedding model" if embedding else f"a {self.task.kind}"
            raise ConfigError(f"{self.directory} is {what}: {otherwise}")

    def warm_up(self, runs: int = WARMUP_RUNS, timed: int = TIMED_RUNS) -> dict[tuple[int, int], float]:
        """Run every bucket full `runs` times, then `timed` more; the fastest timed call's milliseconds
        per bucket become the shape policy's costs, so what a plan costs is what this host measured."""
        timings = {}
        for batch, seq in self.shapes.buckets:
            rows = [[1000 % self.config.vocab_size] * seq] * batch
            plan = self.plan(rows)
            for _ in range(runs):
                self.run_rows(rows, plan, _as_is)
            fastest = float("inf")
            for _ in range(max(1, timed)):
                start = time.perf_counter()
                self.run_rows(rows, plan, _as_is)
                fastest = min(fastest, time.perf_counter() - start)
            timings[(batch, seq)] = fastest * 1000
        self.warm_ms = timings
        self.shapes.measured(timings)
        return timings

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, truncate: bool = False) -> torch.Tensor:
        """Last hidden state (B, T, H), or a classifier's logits (B, L), for any B >= 1 and T up to the
        largest bucket."""
        inputs = self._check(input_ids, attention_mask, token_type_ids, truncate)
        B, T = inputs.shape
        plan = self.shapes.uniform(B, T)
        with torch.inference_mode():
            if len(plan.calls) == 1:  # the common case: one call, no copy of the output
                return self._run(inputs, plan.calls[0])
            return torch.cat([self._run(Batch(*(t[call.start:call.start + call.rows] for t in inputs.as_tuple())),
                                        call) for call in plan.calls])

    def _run(self, inputs: Batch, call: Call) -> torch.Tensor:
        rows, T = inputs.shape
        out = self.buckets[call.bucket](*inputs.padded(*call.shape, self.config.pad_token_id).as_tuple())
        if (rows, T) == call.shape:
            return out
        return out[:rows, :T] if out.dim() == 3 else out[:rows]  # hidden states (B, T, H) or logits (B, L)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None, truncate: bool = False,
              normalize: bool | None = None) -> torch.Tensor:
        """Pooled vectors (B, H), as the model's config says (cls or mean), L2-normalised as it says
        unless `normalize` is given (a server normalises per request)."""
        self._need("embedding", "it scores, it does not embed (use logits)")
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
        self._need("scorer", "it has no logits (use embed)")
        return self(input_ids, attention_mask, token_type_ids, truncate)

    def close(self) -> None:
        """Free what the buckets hold (NeuronCores, GPU memory, process settings); calls fail after."""
        for bucket in {id(b): b for b in self.buckets.values()}.values():  # a program may serve several
            bucket.close()

    def __enter__(self) -> CompiledEncoder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check(self, input_ids, attention_mask, token_type_ids, truncate) -> Batch:
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
        return Batch(input_ids.long(), attention_mask.long(), token_type_ids.long())


def _types(rows: Sequence[Sequence[int]]) -> list[list[int]] | None:
    """The rows' token type ids where any row carries them (text.Row: a pair's second text), else None (all 0)."""
    if not any(getattr(ids, "types", None) for ids in rows):
        return None
    return [getattr(ids, "types", None) or [0] * len(ids) for ids in rows]


def _as_is(output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return output


def load_compiled(directory: str | Path, replicas: int | None = None,
                  buckets: Sequence[tuple[int, int]] | None = None, start_core: int = 0,
                  record_verification: bool = True) -> CompiledEncoder:
    """Load an artifact after checking every file's sha256 against its manifest, and that this host
    can run it (a Neuron artifact for another NeuronCore generation or compiler major version is
    refused, naming both; smaller differences are logged as warnings).

    Neuron: one copy of each bucket on each of the visible NeuronCores start_core .. start_core +
    replicas - 1 (`replicas` defaults to all of them from start_core; NEURON_RT_VISIBLE_CORES honoured);
    a server with one replica thread per core loads with replicas=1, start_core=i, and
    CompiledEncoder.placement says which cores it holds. Elsewhere both are ignored. A cross-compiled
    artifact is verified here, on its first load on a device, against the reference outputs stored
    beside it; with record_verification (the default) the result is written into its manifest.json,
    so later loads skip the check (pass False for a load that must not write into the directory).
    """
    directory = Path(directory)
    manifest = artifact.read_manifest(directory)
    artifact.verify_checksums(directory, manifest)
    backend = _host_backend(directory, manifest)
    if replicas is None:
        replicas = max(1, hardware.neuron_core_count() - start_core) if backend.name == "neuron" else 1
    wanted = {tuple(b) for b in buckets} if buckets else None
    loaded: dict[tuple[int, int], LoadedBucket] = {}
    programs: dict[str, LoadedBucket] = {}  # by file: a CPU artifact's one program serves every bucket
    unverified = []
    try:
        for record in manifest["buckets"]:
            key = (record["batch"], record["seq"])
            if wanted and key not in wanted:
                continue
            if record["file"] not in programs:
                programs[record["file"]] = backend.load(directory / record["file"], manifest["precision"],
                                                        replicas=replicas, start_core=start_core)
                if not record["numerics"].get("verified"):
                    unverified.append(record)
            loaded[key] = programs[record["file"]]
        if not loaded:
            raise ArtifactError(f"none of the buckets {sorted(wanted or [])} is in {directory}")
        if unverified:
            _verify_on_first_load(directory, manifest, loaded, unverified, record_verification)
    except BaseException:
        for bucket in programs.values():  # a failed load gives back the cores it took
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


def _verify_on_first_load(directory: Path, manifest: dict, loaded: dict, records: list[dict],
                          write: bool) -> None:
    references = torch.load(directory / "reference.pt", weights_only=True)
    tolerance = Tolerance(**manifest["tolerance"])
    for record in records:
        numerics = check_bucket(loaded[(record["batch"], record["seq"])], references[record["name"]],
                                manifest["precision"], tolerance, record["name"])
        for sharing in manifest["buckets"]:  # every bucket this program serves
            if sharing["file"] == record["file"]:
                sharing["numerics"] = numerics
        log.info("verified %s on first load: max abs %.2e, min cosine %.6f", record["name"],
                 numerics["max_abs"], numerics["min_cosine"])
    if not write:
        return
    try:
        write_json_atomic(directory / artifact.MANIFEST, manifest)
    except OSError as exc:  # a read-only artifact still runs; it is verified again next time
        log.warning("could not record the verification in %s: %s", directory, exc)
