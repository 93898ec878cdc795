"""neuron-encoder: a BERT-style encoder in plain PyTorch, compiled for AWS Inferentia2 and Trainium."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import EncoderConfig, PRESETS, preset
from .errors import NeuronEncoderError
from .model import Encoder

__all__ = ["Encoder", "EncoderConfig", "PRESETS", "preset", "NeuronEncoderError", "__version__"]
