"""The versioned benchmark result file: one JSON per run (with a CSV beside it) that reports merge.

A result carries its schema name and version so a report built months later, on another
machine, can tell a bench result from any other JSON and refuse a format it does not know.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuron_encoder.bench.checks import MODES
from neuron_encoder.bench.stats import LATENCY_KEYS
from neuron_encoder.errors import InputFileError
from neuron_encoder.files import atomic_write_bytes, read_json_file, utc_now

SCHEMA = "neuron-encoder/bench-result"
VERSION = 2  # 2: rows and SLO entries name their `engine` (1 called it `backend`); threads per worker
SLO_KEYS = ("engine", "slo_p99_ms", "best_throughput", "at_concurrency", "p99_ms")

# Minimum value of each integer field.
_INT_FIELDS = {"batch_size": 1, "seq_len": 1, "concurrency": 1, "cores": 1, "calls": 0, "errors": 0}
_NON_NEGATIVE_FLOATS = ("duration_s", "throughput_avg", "throughput_peak", "tokens_per_s", "cpu_percent", "mem_mb")
_REQUIRED_STRINGS = ("engine", "model", "precision", "mode")


class ResultFileError(InputFileError):
    """A result file that is missing or is not a readable bench result; the message names the file."""


def _as_float(name: str, value: Any) -> float:
    # bool is an int subclass; True as a latency is a bug, not a number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class BenchRow:
    """One measured configuration: what ran, how it was loaded, and what came out."""

    engine: str  # what ran, e.g. "cpu-eager", "cpu-artifact-fp32", "cuda-eager-fp16", "neuron-1core"
    label: str  # free text, e.g. "TorchScript artifact; closed loop, 2 workers, 2 x 1 CPU thread"
    model: str
    precision: str
    batch_size: int
    seq_len: int
    concurrency: int
    mode: str  # "closed" (fixed concurrency) or "open" (fixed arrival rate)
    rate: float | None = None  # requests/s offered in open loop; None in closed loop
    cores: int  # NeuronCores, or CPU threads, used
    threads_per_worker: int | None = None  # CPU intra-op threads each worker ran with (threads.py); None off the CPU
    oversubscribed: bool = False  # workers x threads_per_worker exceeded the CPU threads, on purpose
    calls: int
    errors: int = 0
    duration_s: float
    latency_ms: dict[str, float]  # per call, as from stats.latency_summary
    throughput_avg: float  # inferences/s over the whole run
    throughput_peak: float  # inferences/s in the busiest 1 s window
    tokens_per_s: float
    padding_efficiency: float  # real tokens / padded tokens, 0..1
    cpu_percent: float
    mem_mb: float
    accuracy_cosine_min: float | None = None  # vs the CPU fp32 reference
    task: str = "embedding"  # or classifier, reranker: scored by the two below instead of cosine
    accuracy_logit_max_abs: float | None = None  # max |logit difference| vs the CPU fp32 reference
    accuracy_top1: float | None = None  # share of the reference's top-1 choices kept, 0..1
    harness_overhead_ms: float | None = None
    artifact_sha256: str | None = None

    def __post_init__(self) -> None:
        for name in _REQUIRED_STRINGS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.label, str):
            raise ValueError(f"label must be a string, got {self.label!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name, minimum in _INT_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        for name in _NON_NEGATIVE_FLOATS:
            value = _as_float(name, getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
            object.__setattr__(self, name, value)
        efficiency = _as_float("padding_efficiency", self.padding_efficiency)
        if not 0.0 <= efficiency <= 1.0:
            raise ValueError(f"padding_efficiency must be within 0..1, got {efficiency}")
        object.__setattr__(self, "padding_efficiency", efficiency)
        self._check_rate()
        for name in ("accuracy_cosine_min", "harness_overhead_ms", "accuracy_logit_max_abs", "accuracy_top1"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_float(name, value))
        if self.harness_overhead_ms is not None and self.harness_overhead_ms < 0:
            raise ValueError(f"harness_overhead_ms must be >= 0, got {self.harness_overhead_ms}")
        if self.threads_per_worker is not None and (isinstance(self.threads_per_worker, bool) or not isinstance(
                self.threads_per_worker, int) or self.threads_per_worker < 1):
            raise ValueError(f"threads_per_worker must be None or an integer >= 1, got {self.threads_per_worker!r}")
        if not isinstance(self.oversubscribed, bool):
            raise ValueError(f"oversubscribed must be true or false, got {self.oversubscribed!r}")
        if self.artifact_sha256 is not None and not isinstance(self.artifact_sha256, str):
            raise ValueError(f"artifact_sha256 must be a string or None, got {self.artifact_sha256!r}")
        object.__setattr__(self, "latency_ms", _check_latency(self.latency_ms))

    def _check_rate(self) -> None:
        if self.mode == "closed":
            if self.rate is not None:
                raise ValueError(f"rate is for open-loop rows; a closed-loop row has rate None, got {self.rate!r}")
            return
        if self.rate is None:
            raise ValueError("an open-loop row needs rate (requests/s offered)")
        rate = _as_float("rate", self.rate)
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        object.__setattr__(self, "rate", rate)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, field order as declared."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> BenchRow:
        """Build a row from a parsed JSON object, naming missing or unexpected fields."""
        if not isinstance(data, dict):
            raise ValueError(f"a row must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        unexpected = sorted(set(data) - set(names))
        if unexpected:
            raise ValueError(f"unexpected field(s) {', '.join(unexpected)}")
        return cls(**data)


def _check_latency(latency: Any) -> dict[str, float]:
    if not isinstance(latency, dict):
        raise ValueError(f"latency_ms must be a dict with keys {LATENCY_KEYS}, got {latency!r}")
    missing = [key for key in LATENCY_KEYS if key not in latency]
    unexpected = sorted(set(latency) - set(LATENCY_KEYS))
    if missing or unexpected:
        raise ValueError(f"latency_ms keys must be {LATENCY_KEYS}; missing {missing}, unexpected {unexpected}")
    checked = {}
    for key in LATENCY_KEYS:
        value = _as_float(f"latency_ms[{key!r}]", latency[key])
        if value < 0:
            raise ValueError(f"latency_ms[{key!r}] must be >= 0, got {value}")
        checked[key] = value
    return checked


def _check_slo(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"an slo entry must be a JSON object, got {type(entry).__name__}")
    missing = [key for key in SLO_KEYS if key not in entry]
    if missing:
        raise ValueError(f"slo entry is missing field(s) {', '.join(missing)}")
    if not isinstance(entry["engine"], str) or not entry["engine"]:
        raise ValueError(f"slo engine must be a non-empty string, got {entry['engine']!r}")
    checked = dict(entry)
    for key in ("slo_p99_ms", "best_throughput", "p99_ms"):
        checked[key] = _as_float(f"slo {key}", entry[key])
    concurrency = entry["at_concurrency"]
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"slo at_concurrency must be an integer >= 1, got {concurrency!r}")
    return checked


@dataclass(kw_only=True)
class BenchResult:
    """One benchmark run on one machine: its environment, every row, and optional SLO findings.

    slo holds dicts {engine, slo_p99_ms, best_throughput, at_concurrency, p99_ms}: the best
    throughput a engine reached while its p99 stayed within the SLO (extra keys are kept).
    failures holds {engine, error} for each engine that produced no rows, and why.
    """

    command: str
    environment: dict[str, Any]
    rows: list[BenchRow]
    slo: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    created: str = field(default_factory=utc_now)
    schema: str = field(default=SCHEMA, init=False)
    version: int = field(default=VERSION, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.command, str):
            raise ValueError(f"command must be a string, got {self.command!r}")
        if not isinstance(self.created, str) or not self.created:
            raise ValueError(f"created must be an ISO 8601 string, got {self.created!r}")
        if not isinstance(self.environment, dict):
            raise ValueError(f"environment must be a dict, got {type(self.environment).__name__}")
        if not isinstance(self.rows, list) or not all(isinstance(r, BenchRow) for r in self.rows):
            raise ValueError("rows must be a list of BenchRow")
        if not isinstance(self.slo, list):
            raise ValueError(f"slo must be a list, got {type(self.slo).__name__}")
        self.slo = [_check_slo(entry) for entry in self.slo]
        if not isinstance(self.failures, list) or not all(
                isinstance(f, dict) and isinstance(f.get("engine"), str) and isinstance(f.get("error"), str)
                for f in self.failures):
            raise ValueError("failures must be a list of {engine, error} objects")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, schema and version first."""
        return {
            "schema": self.schema,
            "version": self.version,
            "created": self.created,
            "command": self.command,
            "environment": self.environment,
            "rows": [row.to_dict() for row in self.rows],
            "slo": list(self.slo),
            "failures": list(self.failures),
        }


def csv_columns() -> list[str]:
    """CSV header: the row fields, latency_ms flattened to latency_p50_ms ... latency_min_ms."""
    columns: list[str] = []
    for f in dataclasses.fields(BenchRow):
        if f.name == "latency_ms":
            columns.extend(f"latency_{key}_ms" for key in LATENCY_KEYS)
        else:
            columns.append(f.name)
    return columns


def _csv_text(rows: list[BenchRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns())
    for row in rows:
        data = row.to_dict()
        latency = data.pop("latency_ms")
        data.update({f"latency_{key}_ms": latency[key] for key in LATENCY_KEYS})
        writer.writerow(["" if data[name] is None else data[name] for name in csv_columns()])
    return buffer.getvalue()


def write_result(result: BenchResult, path_json: str | Path) -> tuple[Path, Path]:
    """Write the result as JSON and the rows as a CSV of the same stem; returns both paths."""
    path_json = Path(path_json)
    if path_json.suffix != ".json":
        raise ValueError(f"a result file name must end in .json, got {path_json}")
    path_csv = path_json.with_suffix(".csv")
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path_json, text.encode("utf-8"))
    atomic_write_bytes(path_csv, _csv_text(result.rows).encode("utf-8"))
    return path_json, path_csv


def read_result(path: str | Path) -> BenchResult:
    """Read and check a result file; every problem is a ResultFileError naming the file."""
    path = Path(path)
    data = read_json_file(path, "result file", ResultFileError)
    if not isinstance(data, dict):
        raise ResultFileError(f"{path}: not a bench result (top level is a JSON {type(data).__name__})")
    if "schema" not in data:
        raise ResultFileError(f"{path}: not a bench result (no 'schema' field; expected {SCHEMA!r})")
    if data["schema"] != SCHEMA:
        raise ResultFileError(f"{path}: schema is {data['schema']!r}, expected {SCHEMA!r}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ResultFileError(f"{path}: version must be an integer, got {version!r}")
    if version not in (1, VERSION):
        newer = " (written by a newer neuron-encoder)" if version > VERSION else ""
        raise ResultFileError(
            f"{path}: result version {version} is not supported{newer}; this neuron-encoder reads versions 1-{VERSION}"
        )
    if version == 1:
        data = _from_version_1(data)
    missing = [key for key in ("created", "command", "environment", "rows") if key not in data]
    if missing:
        raise ResultFileError(f"{path}: missing field(s) {', '.join(missing)}")
    if not isinstance(data["rows"], list):
        raise ResultFileError(f"{path}: rows must be a list, got {type(data['rows']).__name__}")
    rows = []
    for index, row in enumerate(data["rows"]):
        try:
            rows.append(BenchRow.from_dict(row))
        except (ValueError, TypeError) as exc:
            raise ResultFileError(f"{path}: row {index}: {exc}") from None
    try:
        return BenchResult(
            command=data["command"],
            environment=data["environment"],
            rows=rows,
            slo=data.get("slo") or [],
            failures=data.get("failures") or [],
            created=data["created"],
        )
    except (ValueError, TypeError) as exc:
        raise ResultFileError(f"{path}: {exc}") from None


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version 1 result in version 2's names: `backend` became `engine` in rows and SLO entries."""
    def renamed(entry: Any) -> Any:
        if isinstance(entry, dict) and "backend" in entry and "engine" not in entry:
            entry = {("engine" if key == "backend" else key): value for key, value in entry.items()}
        return entry
    migrated = dict(data)
    for key in ("rows", "slo"):
        if isinstance(data.get(key), list):
            migrated[key] = [renamed(entry) for entry in data[key]]
    return migrated
