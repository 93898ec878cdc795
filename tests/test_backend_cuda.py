"""The CUDA backend's pure parts, without a GPU (fake probes), and its real path where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder import hardware
from neuron_encoder.backends import CompileOptions, select_backend
from neuron_encoder.backends.cuda import DTYPES, TF32, CudaBackend
from neuron_encoder.errors import BackendUnavailable


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: True)
    monkeypatch.setattr(hardware, "cuda_bf16_supported", lambda: False)


def test_without_a_gpu_cuda_is_unavailable_and_says_why(monkeypatch):
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    assert "no CUDA GPU" in CudaBackend().run_problem()
    with pytest.raises(BackendUnavailable, match="backend 'cuda' is not usable here: torch sees no CUDA GPU"):
        select_backend("cuda", CompileOptions(auto_cast="none"))


def test_precisions_a_gpu_runs(fake_gpu):
    backend = CudaBackend()
    assert backend.unavailable_reason(CompileOptions(auto_cast="matmult", auto_cast_type="fp16")) is None
    assert backend.unavailable_reason(CompileOptions(auto_cast="matmult", auto_cast_type="tf32")) is None
    assert "no bf16 support" in backend.unavailable_reason(CompileOptions(auto_cast="matmult", auto_cast_type="bf16"))
    assert "no CUDA equivalent" in backend.unavailable_reason(
        CompileOptions(auto_cast="matmult", auto_cast_type="fp8_e4m3"))
    _, options, reason = select_backend("cuda", CompileOptions())
    assert options.precision == "fp16" and "auto: fp16 on the GPU" in reason
    assert DTYPES["tf32"] is torch.float32 and DTYPES["fp16"] is torch.float16


def test_tf32_is_held_while_a_tf32_bucket_is_open_and_restored_after():
    before = torch.backends.cuda.matmul.allow_tf32
    TF32.acquire()
    TF32.acquire()
    assert torch.backends.cuda.matmul.allow_tf32 is True
    TF32.release()
    assert torch.backends.cuda.matmul.allow_tf32 is True  # one holder left
    TF32.release()
    TF32.release()  # an extra release is harmless
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("auto_cast_type", ["fp16", "tf32"])
def test_a_cuda_artifact_compiles_gates_and_runs(tiny_model, tmp_path, auto_cast_type):
    from neuron_encoder import load_compiled
    from neuron_encoder.compiler import compile_model
    from neuron_encoder.numerics import compare_outputs, sample_inputs
    before = torch.backends.cuda.matmul.allow_tf32
    result = compile_model(tiny_model, batch_sizes="2", seq_lens="16", backend="cuda", out=tmp_path / "art",
                           options=CompileOptions(auto_cast="matmult", auto_cast_type=auto_cast_type))
    assert result.manifest["buckets"][0]["numerics"]["verified"]
    assert torch.backends.cuda.matmul.allow_tf32 == before  # the compile left no switch behind
    with load_compiled(result.path) as model:
        assert torch.backends.cuda.matmul.allow_tf32 == (auto_cast_type == "tf32" or before)
        ids, mask, types = sample_inputs(tiny_model.config, 2, 16, seed=1)
        with torch.no_grad():
            got = model(ids, mask, types)
            assert got.device.type == "cpu"
            assert compare_outputs(got, tiny_model(ids, mask, types), mask)["min_cosine"] > 0.99
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_a_cuda_classifier_artifact_carries_its_head(tiny_config, tmp_path):
    from neuron_encoder import Encoder, load_compiled
    from neuron_encoder.compiler import compile_model
    from neuron_encoder.numerics import compare_outputs, sample_inputs
    torch.manual_seed(0)
    classifier = Encoder(tiny_config.replace(num_labels=3)).eval()
    result = compile_model(classifier, batch_sizes="2", seq_lens="16", backend="cuda", out=tmp_path / "art",
                           options=CompileOptions(auto_cast="matmult", auto_cast_type="fp16"))
    assert result.manifest["buckets"][0]["numerics"]["rule"].startswith("max abs logit error")
    with load_compiled(result.path) as model:
        ids, mask, types = sample_inputs(tiny_config, 2, 16, seed=1)
        got = model.logits(ids, mask, types)
        with torch.no_grad():
            assert got.shape == (2, 3) and compare_outputs(got, classifier(ids, mask, types), mask)["logit_error"] < 0.05
