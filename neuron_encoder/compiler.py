"""Compile a model into static-shape buckets and prove each still computes what eager fp32 does."""

from __future__ import annotations

import logging
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import __version__, artifact, hardware
from .backends import Backend, CompileOptions, Runner, select_backend
from .errors import ConfigError, NumericsError, ShapeError
from .model import Encoder
from .text import random_batch
from .weights import load_model

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Tolerance:
    """The numerics gate: fp32 artifacts by max abs error, reduced precision by cosine."""

    max_abs: float = 1e-3
    min_cosine: float = 0.999


@dataclass
class CompileResult:
    path: Path
    manifest: dict
    cache_hit: bool
    backend_reason: str


def parse_sizes(text: str | Sequence[int], what: str) -> list[int]:
    """'1,8' -> [1, 8], refusing anything that is not a positive integer."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = sorted({int(str(item).strip()) for item in items if str(item).strip()})
    except ValueError:
        raise ConfigError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    if not sizes or sizes[0] <= 0:
        raise ConfigError(f"{what} must be positive integers, got {text!r}")
    return sizes


def sample_inputs(config, batch: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Fixed inputs for the numerics gate: random tokens, varied real lengths, both segments."""
    g = torch.Generator().manual_seed(seed * 1000 + batch * 7 + seq)
    lengths = torch.randint(max(1, seq // 4), seq + 1, (batch,), generator=g)
    lengths[0] = seq  # one full row, so the last positions are checked too
    ids, mask, _ = random_batch(config, lengths, seq, g).as_tuple()
    types = ((torch.arange(seq)[None, :] >= lengths[:, None] // 2) & (mask == 1)).long()
    return ids, mask, types


def compare_outputs(got: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Max abs error and min per-token cosine over the real (unpadded) tokens."""
    real = mask.bool()
    got, expected = got.float()[real], expected.float()[real]  # (N, H)
    return {
        "max_abs": (got - expected).abs().max().item(),
        "min_cosine": torch.nn.functional.cosine_similarity(got, expected, dim=-1).min().item(),
    }


def gate(numerics: dict[str, float], precision: str, tolerance: Tolerance) -> tuple[bool, str]:
    if precision == "fp32":
        return numerics["max_abs"] <= tolerance.max_abs, f"max abs error <= {tolerance.max_abs:g}"
    return numerics["min_cosine"] >= tolerance.min_cosine, f"min cosine >= {tolerance.min_cosine:g}"


GATE_RUNS = 3  # JIT fusers rewrite a graph after its first runs: check the rewritten one too


def check_bucket(runner: Runner, reference: dict, precision: str, tolerance: Tolerance, name: str) -> dict:
    """Run the stored sample inputs through a compiled bucket; fail loudly beyond tolerance."""
    runs = []
    with torch.inference_mode():
        for _ in range(GATE_RUNS):
            runs.append(compare_outputs(runner(*reference["inputs"]), reference["output"], reference["inputs"][1]))
    numerics = {"max_abs": max(r["max_abs"] for r in runs), "min_cosine": min(r["min_cosine"] for r in runs)}
    passed, rule = gate(numerics, precision, tolerance)
    result = {"verified": True, "passed": passed, "rule": rule, **numerics}
    if not passed:
        raise NumericsError(f"bucket {name} ({precision}) fails the numerics gate: max abs "
                            f"{numerics['max_abs']:.3g}, min cosine {numerics['min_cosine']:.6f}; "
                            f"needs {rule} (change with --max-abs / --min-cosine)")
    return result


def default_out_dir(model_id: str, backend: str, options: CompileOptions, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model_id).name or model_id)
    target = f"-{options.target}" if options.target else ""
    return Path("artifacts") / f"{safe}-{backend}{target}-{options.precision}-{key[:10]}"


def _versions(backend: Backend) -> dict[str, str | None]:
    return {"torch": torch.__version__, "neuron-encoder": __version__,
            "python": platform.python_version(), **backend.versions()}


def compile_model(model: str | Encoder = "minilm", *, batch_sizes: str | Sequence[int] = (1,),
                  seq_lens: str | Sequence[int] = (128,), backend: str = "auto",
                  options: CompileOptions = CompileOptions(), out: str | Path | None = None,
                  force: bool = False, tolerance: Tolerance = Tolerance(),
                  progress: Progress = log.info) -> CompileResult:
    """Compile `model` for every (batch, seq) bucket into an artifact directory and gate its numerics.

    A repeat call with the same inputs (weights, config, buckets, backend, options, versions) reuses
    the existing artifact unless `force`.
    """
    chosen, reason = select_backend(backend, options)
    progress(f"backend {reason}")
    encoder = load_model(model) if isinstance(model, (str, Path)) else model
    encoder.eval()
    model_id = str(getattr(encoder, "name_or_path", model if isinstance(model, (str, Path)) else "custom"))
    batches = parse_sizes(batch_sizes, "batch sizes")
    seqs = parse_sizes(seq_lens, "sequence lengths")
    if seqs[-1] > encoder.config.max_position_embeddings:
        raise ShapeError(f"sequence length {seqs[-1]} is longer than the model's "
                         f"{encoder.config.max_position_embeddings} positions")
    buckets = [(b, s) for s in seqs for b in batches]
    settings = {
        "weights_sha256": artifact.weights_hash(encoder), "config": encoder.config.to_dict(),
        "buckets": buckets, "backend": chosen.name, "options": _options_dict(options),
        "versions": _versions(chosen),
    }
    key = artifact.cache_key(settings)
    out = Path(out) if out else default_out_dir(model_id, chosen.name, options, key)

    cached = _reuse(out, key, force)
    if cached is not None:
        progress(f"cache hit: {out} was compiled with the same weights, buckets and options "
                 "(--force recompiles)")
        return CompileResult(out, cached, True, reason)

    runs_here = chosen.can_run()
    records, references = [], {}
    with artifact.building(out, force=True) as temp, torch.inference_mode(False), torch.no_grad():
        (temp / "buckets").mkdir()
        for i, (batch, seq) in enumerate(buckets, 1):
            name = artifact.bucket_name(batch, seq)
            progress(f"[{i}/{len(buckets)}] {name}: compiling for {chosen.name} ({options.precision})...")
            example = sample_inputs(encoder.config, batch, seq)
            reference = {"inputs": example, "output": encoder(*example)}
            start = time.perf_counter()
            compiled = chosen.compile(encoder, example, options, temp / "workdirs" / name)
            file = Path("buckets") / f"{name}{chosen.suffix}"
            chosen.save(compiled, temp / file)
            seconds = time.perf_counter() - start
            if runs_here:  # check the saved file, as users will load it
                numerics = check_bucket(chosen.load(temp / file), reference, options.precision, tolerance, name)
                verdict = f"max abs {numerics['max_abs']:.2e}, min cosine {numerics['min_cosine']:.6f}: ok"
            else:
                numerics = {"verified": False, "reason": "cross-compiled: this host cannot run it; "
                                                         "verified on first load on the device"}
                verdict = "not verified (cross-compiled)"
            progress(f"[{i}/{len(buckets)}] {name}: {seconds:.1f} s; {verdict}")
            records.append({"name": name, "batch": batch, "seq": seq, "file": str(file),
                            "compile_seconds": round(seconds, 3), "numerics": numerics})
            references[name] = reference
        torch.save(references, temp / "reference.pt")
        manifest = {
            "format": artifact.FORMAT_VERSION, "created": artifact.utc_now(), "cache_key": key,
            "model": {"id": model_id, "config": settings["config"], "weights_sha256": settings["weights_sha256"]},
            "backend": chosen.name, "backend_reason": reason, "target": options.target,
            "precision": options.precision, "options": settings["options"],
            "compiler_args": _compiler_args(chosen, options), "versions": settings["versions"],
            "tolerance": {"max_abs": tolerance.max_abs, "min_cosine": tolerance.min_cosine},
            "buckets": records, "host": hardware.describe(),
            "files": artifact.file_checksums(temp),
        }
        artifact.write_json_atomic(temp / artifact.MANIFEST, manifest)
    progress(f"artifact written: {out}")
    return CompileResult(out, manifest, False, reason)


def _options_dict(options: CompileOptions) -> dict:
    return {"target": options.target, "auto_cast": options.auto_cast, "auto_cast_type": options.auto_cast_type,
            "optlevel": options.optlevel, "extra_args": list(options.extra_args)}


def _compiler_args(backend: Backend, options: CompileOptions) -> list[str] | None:
    if backend.name != "neuron":
        return None
    from .backends.neuron import compiler_args, resolve_target
    return compiler_args(options, resolve_target(options))


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
