"""neuron-encoder: a BERT-style encoder in plain PyTorch, compiled for AWS Inferentia2 and Trainium."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import EncoderConfig, PRESETS, preset
from .errors import NeuronEncoderError
from .model import Encoder

__all__ = ["load_compiled", "Encoder", "EncoderConfig", "PRESETS", "preset", "NeuronEncoderError", "__version__"]


def load_compiled(directory, replicas=None, buckets=None, start_core=0, record_verification=True):
    """Load a compiled artifact directory (see neuron_encoder.runtime.load_compiled)."""
    from .runtime import load_compiled as _load
    return _load(directory, replicas=replicas, buckets=buckets, start_core=start_core,
                 record_verification=record_verification)
