"""Every setting of the server in one checked, frozen object, with text-embeddings-inference's
names where TEI has one; and the SageMaker container's conventions (port, model directory).

Settings are checked before anything loads: a bad value is a ConfigError (exit 2) naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from neuron_encoder.backends import CompileOptions
from neuron_encoder.errors import ConfigError, positive_int
from neuron_encoder.weights import DEFAULT_MODEL

SAGEMAKER_PORT = 8080
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
API_KEY_ENV = "NEURON_ENCODER_API_KEY"
# Compiled when serving a model that has no artifact yet: a few batch sizes so packing can fit the load,
# sequence lengths for queries up to passages. Compile your own artifact for other shapes.
DEFAULT_BATCH_SIZES = "1,4,16,32"
DEFAULT_SEQ_LENS = "32,64,128,256"


@dataclass(frozen=True)
class ServeSettings:
    """What `neuron-encoder serve` runs with; the option of each field is its name with dashes."""

    artifact: str | None = None  # a compiled artifact directory; else `model` is compiled (through the cache)
    model: str | None = None  # a model spec (see models.py); DEFAULT_MODEL when neither is given
    backend: str = "auto"
    batch_sizes: str = DEFAULT_BATCH_SIZES
    seq_lens: str = DEFAULT_SEQ_LENS
    compile_options: CompileOptions = field(default_factory=CompileOptions)
    artifacts_dir: str = "artifacts"
    host: str = "127.0.0.1"
    port: int = 8080
    sagemaker: bool = False
    workers: int | None = None  # server processes; None: auto (workers.plan_workers)
    replicas: int | None = None  # per worker; default: one per NeuronCore, one per GPU, one on the CPU
    max_batch_tokens: int = 16384  # padded tokens (batch x bucket length) one batch may hold
    max_batch_requests: int | None = None  # inputs one batch may hold; default the largest bucket's batch
    max_client_batch_size: int = 32  # inputs in one request
    max_concurrent_requests: int = 512  # inputs admitted (waiting or computing) before 429
    max_batch_delay_ms: float = 0.0  # wait this long for a fuller batch; 0: run what is waiting at once
    request_timeout_ms: float = 30000.0  # longest wait in the queue before a 503
    auto_truncate: bool = False
    payload_limit: int = 2_000_000  # bytes
    api_key: str | None = None
    graceful_timeout: float = 30.0  # seconds to finish accepted requests after SIGTERM
    json_output: bool = False
    cors_allow_origin: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("port", "max_batch_tokens", "max_client_batch_size", "max_concurrent_requests",
                     "payload_limit"):
            positive_int(f"--{_dashed(name)}", getattr(self, name))
        for name in ("workers", "replicas", "max_batch_requests"):
            if getattr(self, name) is not None:
                positive_int(f"--{_dashed(name)}", getattr(self, name))
        for name in ("request_timeout_ms", "graceful_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{_dashed(name)} must be positive, got {getattr(self, name)!r}")
        if self.max_batch_delay_ms < 0:
            raise ConfigError(f"--max-batch-delay-ms must be >= 0, got {self.max_batch_delay_ms!r}")
        if self.port > 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port")
        if self.max_client_batch_size > self.max_concurrent_requests:
            raise ConfigError(f"--max-client-batch-size {self.max_client_batch_size} is more than "
                              f"--max-concurrent-requests {self.max_concurrent_requests}: such a request "
                              "could never be admitted")
        if self.artifact and self.model:
            raise ConfigError("give --artifact (a compiled directory) or --model (compiled on start), not both")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api-key is empty")

    @property
    def model_spec(self) -> str:
        return self.model or DEFAULT_MODEL

    def replace(self, **changes) -> ServeSettings:
        return replace(self, **changes)


def parse_workers(text: str) -> int | None:
    """--workers: 'auto' (None: replicas.plan_workers decides) or a positive number."""
    if text.strip().lower() == "auto":
        return None
    try:
        return positive_int("--workers", int(text))
    except ValueError:
        raise ConfigError(f"--workers must be a number or auto, got {text!r}") from None


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def resolve(settings: ServeSettings, environ: Mapping[str, str] | None = None,
            api_key_file: str | None = None) -> ServeSettings:
    """The settings as the environment completes them.

    SageMaker (--sagemaker, or SAGEMAKER_BIND_TO_PORT set, as SageMaker's `serve` containers get it):
    bind 0.0.0.0 on SAGEMAKER_BIND_TO_PORT (default 8080), load the artifact from SM_MODEL_DIR
    (default /opt/ml/model), or its artifact/ folder when it has one. The API key: --api-key, else
    the key file, else NEURON_ENCODER_API_KEY.
    """
    env = os.environ if environ is None else environ
    changes: dict = {}
    if settings.sagemaker or env.get("SAGEMAKER_BIND_TO_PORT"):
        port = env.get("SAGEMAKER_BIND_TO_PORT") or str(SAGEMAKER_PORT)
        try:
            changes.update(host="0.0.0.0", port=int(port), sagemaker=True)
        except ValueError:
            raise ConfigError(f"SAGEMAKER_BIND_TO_PORT={port!r} is not a port number") from None
        if not settings.artifact and not settings.model:
            model_dir = Path(env.get("SM_MODEL_DIR") or SAGEMAKER_MODEL_DIR)
            changes["artifact"] = str(model_dir / "artifact" if (model_dir / "artifact").is_dir() else model_dir)
    key = settings.api_key
    if key is None and api_key_file:
        try:
            key = Path(api_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --api-key-file {api_key_file}: {exc.strerror or exc}") from None
    if key is None and env.get(API_KEY_ENV):
        key = env[API_KEY_ENV]
    if key != settings.api_key:
        changes["api_key"] = key
    return settings.replace(**changes) if changes else settings
