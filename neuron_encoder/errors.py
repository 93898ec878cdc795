"""One small exception family: the CLI maps it to exit codes, the server to HTTP status codes."""

from __future__ import annotations


class NeuronEncoderError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(NeuronEncoderError, ValueError):
    """An invalid model configuration or command option."""

    exit_code = 2


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
