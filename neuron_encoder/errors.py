"""One small exception family: the CLI maps it to exit codes, the server to HTTP status codes; and the one
positive-integer check that raises its ConfigError."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class NeuronEncoderError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(NeuronEncoderError, ValueError):
    """An invalid model configuration or command option."""

    exit_code = 2


def positive_int(name: str, value) -> int:
    """`value` if it is an int >= 1 (not a bool); else a ConfigError naming `name`: every front end's check."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class CheckpointError(NeuronEncoderError):
    """A checkpoint that cannot be found, read or mapped onto the encoder."""

    exit_code = 3


class ShapeError(NeuronEncoderError, ValueError):
    """Inputs that do not fit the model or its compiled buckets."""

    exit_code = 4


class BackendUnavailable(NeuronEncoderError):
    """A backend was asked for whose hardware or SDK is not on this machine."""

    exit_code = 5


class ArtifactError(NeuronEncoderError):
    """A compiled artifact that is missing, incomplete or tampered with."""

    exit_code = 6


class NumericsError(NeuronEncoderError):
    """A compiled model whose outputs drift beyond tolerance from the fp32 reference."""

    exit_code = 7


class CompileError(NeuronEncoderError):
    """The compiler (neuronx-cc, TorchScript, ...) failed on a bucket."""

    exit_code = 8


class InputFileError(NeuronEncoderError, ValueError):
    """A file the user points at (a benchmark result, a price table) that is missing or malformed."""

    exit_code = 2


def run_main(main: Callable[[], T]) -> T:
    """Run a command's body; our errors become one line on stderr and their exit code.

    The one mapping from errors to exit codes, shared by the CLI and the scripts under compile/
    and benchmarks/. Anything else is a bug, and keeps its traceback.
    """
    try:
        return main()
    except NeuronEncoderError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


class BenchmarkFailed(NeuronEncoderError):
    """A benchmark target failed: no call succeeded, or its outputs are not hidden states."""

    exit_code = 10


class DeployError(NeuronEncoderError):
    """An AWS deployment step that cannot go on (credentials, region, quota, capacity, permissions).

    The message is one line saying what to do; when something was already created it ends with
    the `neuron-encoder deploy cleanup RUN` command that removes it.
    """

    exit_code = 9
