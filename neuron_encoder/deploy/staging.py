"""S3 for a run: the wheel and configs go up before the instances start, results come back after.

Everything of a run lives under s3://BUCKET/neuron-encoder/RUN_ID/: staging/ (what instances
read) and results/<instance type>-<instance id>/ (what they write). The instances benchmark the
code of this checkout, built into a wheel here with `pip wheel --no-deps`, so what is measured is
what is committed (or about to be), not whatever PyPI has.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..bench.results import ResultFileError, read_result
from ..errors import DeployError
from ..files import atomic_write_bytes
from .aws import Aws, AwsCallError

ROOT_PREFIX = "neuron-encoder"


def run_prefix(run_id: str) -> str:
    return f"{ROOT_PREFIX}/{run_id}"


def staging_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}/staging"


def results_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}/results"


def checkout_root() -> Path:
    """The source checkout this package runs from; an installed wheel has none (use a PyPI spec then)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise DeployError(f"{root} is not a neuron-encoder checkout (no pyproject.toml): pass --package "
                          "'neuron-encoder[bench]==VERSION' to install from PyPI on the instances instead")
    return root


def build_wheel(checkout: Path, out_dir: Path) -> Path:
    """`pip wheel --no-deps` of the checkout into out_dir; the instances resolve dependencies themselves.

    Built from a copy of pyproject.toml, README.md and the package, so a stale build/ folder in the
    checkout (setuptools reuses it) cannot slip deleted modules into the wheel. This environment's
    setuptools builds it when it can (seconds, offline); else pip's isolated build fetches one.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="neuron-encoder-src-") as tmp:
        source = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(checkout / name, source / name)
        shutil.copytree(checkout / "neuron_encoder", source / "neuron_encoder",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir)]
        for isolation in (["--no-build-isolation"], []):
            completed = subprocess.run([*command, *isolation, str(source)], capture_output=True, text=True,
                                       check=False)
            if completed.returncode == 0:
                break
    wheels = sorted(out_dir.glob("neuron_encoder-*.whl"))
    if completed.returncode != 0 or not wheels:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no wheel written"]
        raise DeployError(f"building a wheel of {checkout} failed: {detail[0]}")
    return wheels[-1]


def check_bucket(aws: Aws, bucket: str) -> None:
    """The bucket exists, we may use it, and it is in our region (instances write to it from there)."""
    try:
        response = aws.call("s3", "head_bucket", {"Bucket": bucket}, read_only=True)
    except AwsCallError as exc:
        if exc.code in ("404", "NoSuchBucket", "NotFound"):
            raise DeployError(f"bucket {bucket} does not exist: create it with `aws s3 mb s3://{bucket} "
                              f"--region {aws.region}` or pass another --bucket") from None
        if exc.code in ("403", "AccessDenied", "Forbidden"):
            raise DeployError(f"no access to bucket {bucket}: it belongs to another account, or your policy "
                              "lacks s3:ListBucket on it") from None
        raise
    found = response.get("BucketRegion") or response.get("ResponseMetadata", {}).get(
        "HTTPHeaders", {}).get("x-amz-bucket-region")
    if found and found != aws.region:
        raise DeployError(f"bucket {bucket} is in {found}, not {aws.region}: pass --region {found}, "
                          f"or a bucket in {aws.region}")


def upload(aws: Aws, bucket: str, key: str, path: Path, tags: list[dict[str, str]]) -> str:
    """put_object with the run's tags, streaming the file (a model.tar.gz can be gigabytes); returns the key."""
    from urllib.parse import urlencode
    with path.open("rb") as body:
        aws.call("s3", "put_object", {"Bucket": bucket, "Key": key, "Body": body,
                                      "Tagging": urlencode({t["Key"]: t["Value"] for t in tags})})
    return key


@dataclass(frozen=True)
class Collected:
    results: list[Path]  # bench result files, flat in out_dir, for `neuron-encoder report out_dir/*.json`
    logs: list[Path]
    skipped: list[str]  # JSON objects that are not bench results (reports' merged.json, ...)


def collect(aws: Aws, bucket: str, run_id: str, out_dir: Path) -> Collected:
    """Download a run's results: result JSONs (checked) flat into out_dir, everything else under logs/."""
    prefix = results_prefix(run_id) + "/"
    objects = aws.paginate("s3", "list_objects_v2", {"Bucket": bucket, "Prefix": prefix}, "Contents")
    if not objects:
        raise DeployError(f"no results under s3://{bucket}/{prefix} yet: the instances upload when they finish "
                          f"(see `neuron-encoder deploy status {run_id}`)")
    results, logs, skipped = [], [], []
    for item in objects:
        relative = item["Key"][len(prefix):]
        body = aws.call("s3", "get_object", {"Bucket": bucket, "Key": item["Key"]}, read_only=True)["Body"].read()
        flat = relative.replace("/", "__")
        if relative.endswith(".json") and _is_result(body):
            results.append(out_dir / flat)
            atomic_write_bytes(results[-1], body)
        elif relative.endswith(".json"):
            skipped.append(item["Key"])
        else:
            logs.append(out_dir / "logs" / relative)
            atomic_write_bytes(logs[-1], body)
    return Collected(results, logs, skipped)


def _is_result(body: bytes) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        path.write_bytes(body)
        try:
            read_result(path)
        except ResultFileError:
            return False
    return True
