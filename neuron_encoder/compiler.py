"""Compile a model into static-shape buckets and prove each still computes what eager fp32 does."""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import __version__, artifact, hardware
from .backends import Backend, CompileOptions, select_backend
from .buckets import DEFAULT_MAX_BUCKETS, plan_seq_lens
from .errors import NumericsError
from .files import safe_name, utc_now, write_json_atomic
from .model import Encoder
from .models import ResolvedModel, load_model
from .numerics import Tolerance, check_bucket, reference
from .options import parse_sizes
from .weights import DEFAULT_MODEL

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
DEFAULT_ARTIFACTS_DIR = Path("artifacts")


@dataclass
class CompileResult:
    path: Path
    manifest: dict
    cache_hit: bool
    backend_reason: str


@dataclass(frozen=True)
class _SeqChoice:
    """How the sequence buckets are chosen: the given lengths, or "auto" (buckets.plan_seq_lens)."""

    seq_lens: str | Sequence[int]
    lengths_from: str | Path | None  # with "auto": the texts whose padding the lengths minimise
    max_buckets: int


@dataclass(frozen=True)
class _Plan:
    """Everything a compile depends on, decided before any work: its cache key names the artifact."""

    resolved: ResolvedModel
    backend: Backend
    options: CompileOptions
    reason: str
    auto_precision: bool  # the precision came from the auto policy: the gate may send it back to fp32
    buckets: list[tuple[int, int]]
    settings: dict[str, Any]
    bucket_choice: dict | None  # how --seq-lens auto chose the lengths, from which texts

    @property
    def key(self) -> str:
        return artifact.cache_key(self.settings)


def compile_model(model: str | Path | Encoder | ResolvedModel = DEFAULT_MODEL, *,
                  batch_sizes: str | Sequence[int] = (1,), seq_lens: str | Sequence[int] = (128,),
                  backend: str = "auto", options: CompileOptions = CompileOptions(),
                  out: str | Path | None = None, artifacts_dir: str | Path = DEFAULT_ARTIFACTS_DIR,
                  force: bool = False, tolerance: Tolerance = Tolerance(), lengths_from: str | Path | None = None,
                  max_buckets: int = DEFAULT_MAX_BUCKETS, progress: Progress = log.info) -> CompileResult:
    """Compile `model` for every (batch, seq) bucket into an artifact directory and gate its numerics.

    seq_lens="auto" picks the sequence buckets (buckets.plan_seq_lens): the max_buckets lengths that
    waste the least padding on the texts of `lengths_from`, or the default grid without it.
    out defaults to artifacts_dir/<model>-<backend>-<precision>-<key>. A repeat call with the same
    inputs (weights, config, buckets, backend, options, versions) reuses the artifact unless `force`.
    With auto_cast="auto", a reduced precision that fails the gate falls back to fp32, and says so.
    """
    sequences = _SeqChoice(seq_lens, lengths_from, max_buckets)
    plan = _plan(model, batch_sizes, sequences, backend, options)
    progress(f"backend {plan.reason}")
    try:
        return _compile(plan, out, artifacts_dir, force, tolerance, progress)
    except NumericsError as error:
        if not plan.auto_precision or plan.options.precision == "fp32":
            raise
        progress(f"auto: {plan.options.precision} fails the numerics gate ({error}); compiling fp32 instead")
        fp32 = _plan(plan.resolved, batch_sizes, sequences, plan.backend.name, options.replace(auto_cast="none"))
        fp32 = dataclasses.replace(fp32, reason=f"{plan.reason}; fp32 after {plan.options.precision} "
                                                "failed the numerics gate")
        return _compile(fp32, out, artifacts_dir, force, tolerance, progress)


def _plan(model, batch_sizes, sequences: _SeqChoice, backend: str, options: CompileOptions) -> _Plan:
    chosen, resolved_options, reason = select_backend(backend, options)
    resolved = model if isinstance(model, ResolvedModel) else load_model(model)
    encoder = resolved.encoder
    batches = parse_sizes(batch_sizes, "batch sizes")
    seqs, choice = plan_seq_lens(sequences.seq_lens, encoder.config.max_length, resolved.tokenizer,
                                 sequences.lengths_from, sequences.max_buckets)
    encoder.config.check_sequence_length(seqs[-1])
    buckets = [(b, s) for s in seqs for b in batches]
    settings = {
        "format": artifact.FORMAT_VERSION,  # a new layout never reuses an old directory
        "weights_sha256": artifact.weights_hash(encoder), "config": encoder.config.to_dict(),
        # a classifier's labels and scores are in the manifest, so in the key too; an embedder's key stays
        # what it was before tasks, so its cached artifacts are still found
        **({"task": resolved.task.to_dict()} if resolved.task.kind != "embedding" else {}),
        "buckets": buckets, "backend": chosen.name, "options": resolved_options.to_dict(),
        "versions": {"torch": torch.__version__, "neuron-encoder": __version__,
                     "python": platform.python_version(), **chosen.versions()},
    }
    return _Plan(resolved, chosen, resolved_options, reason, options.auto_cast == "auto", buckets, settings,
                 choice.to_dict() if choice else None)


def default_out_dir(plan: _Plan, artifacts_dir: str | Path) -> Path:
    target = plan.backend.target(plan.options)
    return Path(artifacts_dir) / (f"{safe_name(plan.resolved.model_id)}-{plan.backend.name}"
                                  f"{'-' + target if target else ''}-{plan.options.precision}-{plan.key[:10]}")


def _compile(plan: _Plan, out, artifacts_dir, force: bool, tolerance: Tolerance, progress: Progress) -> CompileResult:
    out = Path(out) if out else default_out_dir(plan, artifacts_dir)
    cached = _reuse(out, plan.key, force)
    if cached is not None:
        progress(f"cache hit: {out} was compiled with the same weights, buckets and options "
                 "(--force recompiles)")
        return CompileResult(out, cached, True, plan.reason)
    with artifact.building(out, force=force) as temp, torch.inference_mode(False), torch.no_grad():
        records, references = _build_buckets(plan, temp, tolerance, progress)
        torch.save(references, temp / "reference.pt")
        if plan.resolved.tokenizer is not None:
            plan.resolved.tokenizer.save(temp / "tokenizer")
        manifest = _manifest(plan, records, tolerance, temp)
        write_json_atomic(temp / artifact.MANIFEST, manifest)
    progress(f"artifact written: {out}")
    return CompileResult(out, manifest, False, plan.reason)


def _programs(plan: _Plan) -> list[tuple[tuple[int, int], list[tuple[int, int]]]]:
    """(the bucket a program is compiled and gated at, the buckets it serves): one per bucket where the
    backend fixes shapes; one for all, gated at the largest, where it runs any shape (the CPU)."""
    if plan.backend.fixed_shapes:
        return [(bucket, [bucket]) for bucket in plan.buckets]
    return [(max(plan.buckets), plan.buckets)]


def _build_buckets(plan: _Plan, temp: Path, tolerance: Tolerance, progress: Progress) -> tuple[list, dict]:
    """Compile, save, reload and gate every program (a host that cannot run them records why)."""
    backend, options, encoder = plan.backend, plan.options, plan.resolved.encoder
    runs_here = backend.can_run(options)
    records, references = [], {}
    programs = _programs(plan)
    for i, ((batch, seq), served) in enumerate(programs, 1):
        name = artifact.bucket_name(batch, seq) if backend.fixed_shapes else "model"
        progress(f"[{i}/{len(programs)}] {name}: compiling for {backend.name} ({options.precision})...")
        ref = reference(encoder, encoder.config, batch, seq)
        start = time.perf_counter()
        compiled = backend.compile(encoder, ref["inputs"], options, temp / artifact.LOGS / name)
        file = artifact.program_file(backend.suffix, (batch, seq) if backend.fixed_shapes else None)
        (temp / file).parent.mkdir(parents=True, exist_ok=True)
        backend.save(compiled, temp / file)
        seconds = time.perf_counter() - start
        if runs_here:  # check the saved file, as users will load it
            bucket = backend.load(temp / file, options.precision)
            try:
                numerics = check_bucket(bucket, ref, options.precision, tolerance, name)
            finally:
                bucket.close()
            verdict = f"max abs {numerics['max_abs']:.2e}, min cosine {numerics['min_cosine']:.6f}: ok"
        else:
            numerics = {"verified": False, "reason": "cross-compiled: this host cannot run it; "
                                                     "verified on first load on a host that can"}
            verdict = "not verified (cross-compiled)"
        progress(f"[{i}/{len(programs)}] {name}: {seconds:.1f} s; {verdict}")
        for j, bucket in enumerate(served):  # a shared program's compile time counts once
            records.append({"name": artifact.bucket_name(*bucket), "batch": bucket[0], "seq": bucket[1],
                            "file": str(file), "compile_seconds": round(seconds, 3) if j == 0 else 0.0,
                            "numerics": numerics})
            references[artifact.bucket_name(*bucket)] = ref
    return records, references


def _manifest(plan: _Plan, records: list, tolerance: Tolerance, temp: Path) -> dict:
    backend, options = plan.backend, plan.options
    return {
        "format": artifact.FORMAT_VERSION, "created": utc_now(), "cache_key": plan.key,
        "model": {"id": plan.resolved.model_id, "config": plan.settings["config"],
                  "weights_sha256": plan.settings["weights_sha256"]},
        "task": plan.resolved.task.to_dict(),
        "backend": backend.name, "backend_reason": plan.reason, "target": backend.target(options),
        "precision": options.precision, "options": plan.settings["options"],
        "compiler_args": backend.compiler_args(options), "versions": plan.settings["versions"],
        "tolerance": dataclasses.asdict(tolerance),
        "buckets": records, "bucket_choice": plan.bucket_choice, "host": hardware.describe(),
        "files": artifact.file_checksums(temp),
    }


def _reuse(out: Path, key: str, force: bool) -> dict | None:
    """The manifest of an existing artifact with this cache key; an error if `out` holds another."""
    if force or not out.exists():
        return None
    manifest = artifact.read_manifest(out)
    if manifest.get("cache_key") != key:
        raise artifact.ArtifactError(f"{out} holds an artifact compiled with other settings; "
                                     "pass --force to replace it, or choose another --out")
    artifact.verify_checksums(out, manifest)
    return manifest
