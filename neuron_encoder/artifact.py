"""The compiled-artifact directory: manifest, checksums, atomic writes, cache key.

    DIR/manifest.json           what was compiled, how, with which versions; numerics; sha256 of files
    DIR/buckets/b8_s128.pt      one compiled model per (batch, sequence) bucket, where the backend fixes
                                shapes (Neuron, CUDA)
    DIR/model.json              or one program for every bucket, where it runs any shape (the CPU: this
    DIR/weights.safetensors     descriptor and the weights); the manifest still lists the buckets
    DIR/reference.pt            sample inputs and fp32 eager outputs, to verify on another host
    DIR/tokenizer/              the checkpoint's tokenizer files, so the artifact serves text alone
    DIR/logs/b8_s128/           the compiler's log and command (Neuron), kept for debugging; its work
                                files (graph, a copy of the weights, the NEFF) never enter the artifact

A directory is built under a temporary name beside its final one and renamed into place only once
the manifest is written, so an interrupted compile (even kill -9) never leaves a directory that loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import ArtifactError
from .files import read_json_file

MANIFEST = "manifest.json"
LOGS = "logs"
FORMAT_VERSION = 3  # 3: a CPU artifact is one descriptor and its weights; 2: Neuron keeps logs, not workdirs
_TEMP_PREFIX = ".partial-"


def bucket_name(batch: int, seq: int) -> str:
    return f"b{batch}_s{seq}"


def program_file(suffix: str, bucket: tuple[int, int] | None = None) -> Path:
    """Where a compiled program lives in the directory: buckets/b8_s128.pt for one bucket, or model.json
    (the backend's suffix) for every bucket of a backend that runs any shape."""
    return Path("buckets") / f"{bucket_name(*bucket)}{suffix}" if bucket else Path(f"model{suffix}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict, by name: identical weights, identical hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(settings: dict[str, Any]) -> str:
    """sha256 of everything that affects the compiled output (weights hash, config, buckets,
    backend, target, compiler args, versions), serialised canonically."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def file_checksums(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): sha256_file(p)
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}


def is_artifact(directory: Path) -> bool:
    """Whether `directory` holds a manifest of ours (what --force may replace)."""
    try:
        return json.loads((Path(directory) / MANIFEST).read_text()).get("format") is not None
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a compiled-artifact directory")
    if not path.exists():
        raise ArtifactError(f"{directory} has no {MANIFEST}: not an artifact, or an interrupted compile")
    manifest = read_json_file(path, MANIFEST, ArtifactError)
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: not a manifest (a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("format") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {manifest.get('format')!r} is not "
                            f"{FORMAT_VERSION}; recompile with this version of neuron-encoder")
    return manifest


def verify_checksums(directory: Path, manifest: dict[str, Any]) -> None:
    """Refuse an artifact whose files differ from what the manifest recorded."""
    recorded: dict[str, str] = manifest["files"]
    actual = file_checksums(directory)
    changed = sorted(n for n in recorded if n in actual and actual[n] != recorded[n])
    missing = sorted(set(recorded) - set(actual))
    extra = sorted(set(actual) - set(recorded))
    problems = [f"{label}: {', '.join(names)}" for label, names in
                (("changed", changed), ("missing", missing), ("not in the manifest", extra)) if names]
    if problems:
        raise ArtifactError(f"{directory} does not match its manifest (tampered with or corrupted; "
                            f"recompile with --force): " + "; ".join(problems))


def manifest_hash(directory: str | Path) -> str:
    return sha256_file(Path(directory) / MANIFEST)


@contextlib.contextmanager
def building(final: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; on success it replaces `final` atomically.

    The caller writes the manifest last. On any error the temporary directory is removed; after a
    kill -9 it stays behind under a hidden name, never as `final`, and the next build clears it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(final)
    if final.exists() and not force:
        raise ArtifactError(f"{final} already exists; pass --force to replace it")
    if final.exists() and not is_artifact(final) and (not final.is_dir() or any(final.iterdir())):
        raise ArtifactError(f"{final} exists and is not a compiled artifact (no {MANIFEST}); "
                            "not replacing it, even with --force: choose another --out")
    temp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{_TEMP_PREFIX}{final.name}-"))
    try:
        yield temp
        if not (temp / MANIFEST).exists():
            raise ArtifactError("internal error: artifact built without a manifest")
        if final.exists():  # --force: swap the old one out, then delete it
            old = final.with_name(f"{_TEMP_PREFIX}{final.name}-old-{os.getpid()}")
            os.rename(final, old)
            os.rename(temp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _remove_stale_partials(final: Path) -> None:
    for stale in final.parent.glob(f"{_TEMP_PREFIX}{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
