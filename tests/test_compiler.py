"""CPU compile -> load -> outputs equal eager; the numerics gate; the cache; interrupted compiles."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from neuron_encoder import load_compiled
from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model
from neuron_encoder.numerics import Tolerance, sample_inputs
from neuron_encoder.options import parse_sizes
from neuron_encoder.errors import ArtifactError, BackendUnavailable, ConfigError, NumericsError, ShapeError

from .conftest import assert_close, cpu_precision

ROOT = Path(__file__).resolve().parent.parent


def compile_tiny(model, out):
    return compile_model(model, batch_sizes="1,4", seq_lens="16,32", backend="cpu", out=out)


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    """One model for the module, so the shared artifact below matches it."""
    from neuron_encoder import Encoder
    torch.manual_seed(0)
    return Encoder(tiny_config).eval()


@pytest.fixture(scope="module")
def compiled(tiny_model, tmp_path_factory):
    """Compiled once for the tests that only read it."""
    return compile_tiny(tiny_model, tmp_path_factory.mktemp("shared") / "art")


@pytest.fixture
def own_compiled(tiny_model, tmp_path):
    """A private artifact, for tests that change or replace it."""
    return compile_tiny(tiny_model, tmp_path / "art")


def test_manifest_records_what_users_need(compiled, tiny_model):
    m = compiled.manifest
    assert m["backend"] == "cpu" and m["precision"] == cpu_precision() and not compiled.cache_hit
    assert [(b["batch"], b["seq"]) for b in m["buckets"]] == [(1, 16), (4, 16), (1, 32), (4, 32)]
    assert m["model"]["config"]["hidden_size"] == 64 and len(m["model"]["weights_sha256"]) == 64
    assert m["versions"]["torch"] == torch.__version__ and m["versions"]["neuron-encoder"]
    assert m["buckets"][0]["compile_seconds"] > 0  # one program for every bucket: its time counts once
    assert [b["compile_seconds"] for b in m["buckets"][1:]] == [0.0] * 3
    for bucket in m["buckets"]:
        assert bucket["compile_seconds"] >= 0
        numerics = bucket["numerics"]
        assert numerics["verified"] and (numerics["max_abs"] <= 1e-3 if m["precision"] == "fp32"
                                         else numerics["min_cosine"] >= 0.999)
        assert bucket["file"] in m["files"] and len(m["files"][bucket["file"]]) == 64
    assert "reference.pt" in m["files"] and m["created"].endswith("Z")
    on_disk = json.loads((compiled.path / "manifest.json").read_text())
    assert on_disk["cache_key"] == m["cache_key"]


@pytest.mark.parametrize("batch, seq", [(1, 16), (4, 32), (3, 10), (2, 17), (9, 32), (11, 5), (1, 1)])
def test_compiled_equals_eager_with_routing_padding_and_splitting(compiled, tiny_model, tiny_config, batch, seq):
    model = load_compiled(compiled.path)
    ids, mask, types = sample_inputs(tiny_config, batch, seq, seed=3)
    with torch.no_grad():
        expected = tiny_model(ids, mask, types)
    got = model(ids, mask, types)
    assert got.shape == (batch, seq, tiny_config.hidden_size)
    assert_close(got, expected, mask, compiled.manifest["precision"])


def test_routing_picks_the_smallest_bucket_and_splits(compiled):
    model = load_compiled(compiled.path)
    shapes = model.shapes
    assert shapes.chunks(1, 10) == ((1, 1, 16),)
    assert shapes.chunks(3, 17) == ((3, 4, 32),)
    assert shapes.chunks(9, 16) == ((4, 4, 16), (4, 4, 16), (1, 1, 16))
    assert shapes.uniform(9, 16) is shapes.uniform(9, 16)  # memoised per shape
    plan = model.plan([[5] * 10, [5] * 3, [5] * 17])  # ragged rows: one call, filed under (4, 32)
    assert [(call.start, call.rows, call.bucket) for call in plan.calls] == [(0, 3, (4, 32))]
    assert plan.real_tokens == 30 and plan.computed_tokens == 3 * 17  # the CPU runs (3, 17), unpadded


def test_embed_pools_like_the_eager_model(compiled, tiny_model, tiny_config):
    model = load_compiled(compiled.path)
    ids, mask, types = sample_inputs(tiny_config, 3, 12)
    with torch.no_grad():
        expected = tiny_model.embed(ids, mask, types)
    assert_close(model.embed(ids, mask, types), expected, torch.ones(3), compiled.manifest["precision"])


def test_bad_inputs_are_clear_errors(compiled, tiny_config):
    model = load_compiled(compiled.path)
    ids = torch.ones(2, 40, dtype=torch.long)
    with pytest.raises(ShapeError, match="sequence length 40 is longer than the largest compiled bucket \\(32\\)"):
        model(ids)
    assert model(ids, truncate=True).shape == (2, 32, 64)
    with pytest.raises(ShapeError, match="empty input"):
        model(torch.ones(0, 8, dtype=torch.long))
    with pytest.raises(ShapeError, match="integer token ids, got torch.float32"):
        model(torch.ones(2, 8))
    with pytest.raises(ShapeError, match="2-D"):
        model(torch.ones(8, dtype=torch.long))
    with pytest.raises(ShapeError, match="attention_mask has shape"):
        model(torch.ones(2, 8, dtype=torch.long), torch.ones(2, 7, dtype=torch.long))


def test_cache_hit_reuses_the_artifact(own_compiled, tiny_model):
    again = compile_model(tiny_model, batch_sizes="4,1", seq_lens="32,16", backend="cpu", out=own_compiled.path)
    assert again.cache_hit and again.manifest["cache_key"] == own_compiled.manifest["cache_key"]
    forced = compile_model(tiny_model, batch_sizes="1,4", seq_lens="16,32", backend="cpu", out=own_compiled.path,
                           force=True)
    assert not forced.cache_hit and forced.manifest["created"] >= own_compiled.manifest["created"]


def test_other_settings_into_the_same_directory_need_force(own_compiled, tiny_model):
    with pytest.raises(ArtifactError, match="other settings; pass --force"):
        compile_model(tiny_model, batch_sizes="2", seq_lens="16", backend="cpu", out=own_compiled.path)
    assert load_compiled(own_compiled.path).manifest["cache_key"] == own_compiled.manifest["cache_key"]


def test_default_out_dir_is_keyed(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="cpu")
    assert result.path.parent == Path("artifacts") and result.manifest["cache_key"][:10] in result.path.name


def test_tampered_file_is_refused(own_compiled):
    bucket = own_compiled.path / own_compiled.manifest["buckets"][0]["file"]
    data = bytearray(bucket.read_bytes())
    data[-10] ^= 0xFF
    bucket.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"does not match its manifest .*changed: model.json"):
        load_compiled(own_compiled.path)
    weights = own_compiled.path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"changed: .*weights.safetensors"):
        load_compiled(own_compiled.path)


def test_a_cpu_artifact_is_its_weights_and_one_descriptor(compiled, tiny_model):
    """Four buckets, one program: the artifact is about the model's size, not four copies of it, and
    the numerics gate ran once, at the largest bucket."""
    files = compiled.manifest["files"]
    assert sorted(files) == ["model.json", "reference.pt", "weights.safetensors"]
    assert {b["file"] for b in compiled.manifest["buckets"]} == {"model.json"}
    assert len({str(b["numerics"]) for b in compiled.manifest["buckets"]}) == 1
    weights = (compiled.path / "weights.safetensors").stat().st_size
    model_bytes = sum(t.numel() * t.element_size() for t in tiny_model.state_dict().values())
    total = sum((compiled.path / f).stat().st_size for f in files)
    assert model_bytes <= weights < 1.1 * model_bytes and total < 1.5 * weights + 200_000
    with load_compiled(compiled.path) as model:
        modules = {id(bucket.module) for bucket in model.buckets.values()}
        assert len(modules) == 1  # every bucket runs the one packed model


def test_tampered_cache_is_not_reused(own_compiled, tiny_model):
    (own_compiled.path / "reference.pt").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="changed: reference.pt"):
        compile_model(tiny_model, batch_sizes="1,4", seq_lens="16,32", backend="cpu", out=own_compiled.path)


def test_bf16_artifact_passes_the_cosine_gate(tiny_model, tmp_path):
    result = compile_model(tiny_model, batch_sizes="2", seq_lens="16", backend="cpu", out=tmp_path / "bf16",
                           options=CompileOptions(auto_cast="matmult", auto_cast_type="bf16"))
    numerics = result.manifest["buckets"][0]["numerics"]
    assert result.manifest["precision"] == "bf16" and numerics["rule"].startswith("min cosine")
    assert numerics["max_abs"] > 0 and numerics["min_cosine"] >= 0.999


def test_numerics_gate_fails_the_compile_and_writes_nothing(tiny_model, tmp_path):
    with pytest.raises(NumericsError, match="fails the numerics gate"):
        compile_model(tiny_model, batch_sizes="1", seq_lens="16", backend="cpu", out=tmp_path / "bad",
                      options=CompileOptions(auto_cast="matmult"), tolerance=Tolerance(min_cosine=1.0000001))
    assert not (tmp_path / "bad").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, error, words", [
    ({"batch_sizes": ""}, ConfigError, "batch sizes"),
    ({"batch_sizes": "1,x"}, ConfigError, "comma-separated"),
    ({"seq_lens": "0"}, ConfigError, "positive"),
    ({"seq_lens": "4096"}, ShapeError, "longer than the model's 128 positions"),
    ({"backend": "tpu"}, ConfigError, "unknown backend 'tpu'"),
    ({"backend": "neuron"}, BackendUnavailable, "pip.repos.neuron.amazonaws.com"),
    ({"backend": "cpu", "options": CompileOptions(auto_cast="all", auto_cast_type="fp8_e4m3")},
     BackendUnavailable, "fp8_e4m3 is not available on the CPU"),
])
def test_bad_compile_requests(tiny_model, tmp_path, monkeypatch, kwargs, error, words):
    from neuron_encoder import hardware
    # a host without the Neuron SDK, even where the suite runs on an instance that has it
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: "torch_neuronx is not installed")
    args = {"batch_sizes": "1", "seq_lens": "8", "backend": "cpu", "out": tmp_path / "x"} | kwargs
    with pytest.raises(error, match=words):
        compile_model(tiny_model, **args)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("options, words", [
    ({"target": "inf9"}, "unknown target 'inf9'"),
    ({"auto_cast": "matmul"}, "unknown auto-cast 'matmul'"),
    ({"auto_cast_type": "int4"}, "unknown auto-cast type"),
    ({"optlevel": 4}, "optlevel 4"),
])
def test_bad_compile_options(options, words):
    with pytest.raises(ConfigError, match=words):
        CompileOptions(**options)


def test_parse_sizes():
    assert parse_sizes("8, 1,8", "x") == [1, 8]
    assert parse_sizes([4, 2], "x") == [2, 4]


def test_kill_9_mid_compile_leaves_nothing_loadable(tmp_path):
    """A real SIGKILL once the program is written and gated, before the manifest: no artifact appears,
    and the next compile succeeds."""
    out = tmp_path / "art"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from neuron_encoder import Encoder, EncoderConfig
        from neuron_encoder.compiler import compile_model
        torch.manual_seed(0)
        model = Encoder(EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
        def progress(line):
            if line.startswith("[1/1]") and line.endswith("ok"):
                os.kill(os.getpid(), signal.SIGKILL)
        compile_model(model, batch_sizes="1,2,3", seq_lens="8", backend="cpu", out={str(out)!r}, progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".partial-") for p in leftovers)
    with pytest.raises(ArtifactError):
        load_compiled(leftovers[0])
    torch.manual_seed(0)
    from neuron_encoder import Encoder, EncoderConfig
    model = Encoder(EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64))
    compile_model(model, batch_sizes="1", seq_lens="8", backend="cpu", out=out)
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # the stale partial was cleared


def test_force_never_removes_a_directory_that_is_not_an_artifact(tiny_model, tmp_path):
    """--force replaces an artifact; a user's own directory is refused and left exactly as it was."""
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(ArtifactError, match="is not a compiled artifact .*not replacing it, even with --force"):
        compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="cpu", out=mine, force=True)
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"] and (mine / "thesis.txt").read_text() == "years of work"
    assert [p.name for p in tmp_path.iterdir()] == ["my-notes"]  # no partial left beside it


def test_the_artifact_carries_the_tokenizer_and_serves_text(tmp_path, minilm_resolved):
    from neuron_encoder.embeddings import embed_texts
    result = compile_model(minilm_resolved, batch_sizes="2", seq_lens="32", backend="cpu", out=tmp_path / "art",
                           options=CompileOptions(auto_cast="none"))
    assert "tokenizer/tokenizer.json" in result.manifest["files"]
    with load_compiled(result.path) as model:
        assert model.tokenizer is not None and model.tokenizer.max_length == 32
        texts = ["A man plays a guitar.", "Someone strums a guitar.", "Stocks fell sharply."]
        got = embed_texts(model, texts)  # the artifact's own tokenizer
        expected = embed_texts(minilm_resolved.encoder, texts, minilm_resolved.tokenizer)
        assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.9999


def test_a_random_model_artifact_has_no_tokenizer(tiny_model, tmp_path):
    result = compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="cpu", out=tmp_path / "art")
    assert not any(name.startswith("tokenizer/") for name in result.manifest["files"])
    with load_compiled(result.path) as model:
        assert model.tokenizer is None


def test_close_frees_the_buckets_and_calls_fail_after(tiny_model, tmp_path):
    path = compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="cpu", out=tmp_path / "art").path
    first, second = load_compiled(path), load_compiled(path)
    first.close()
    with pytest.raises(RuntimeError, match="closed"):
        first(torch.ones(1, 8, dtype=torch.long))
    with second:  # the other copy is unaffected, and a context manager closes it
        assert second(torch.ones(1, 8, dtype=torch.long)).shape == (1, 8, 64)
    with pytest.raises(RuntimeError, match="closed"):
        second(torch.ones(1, 8, dtype=torch.long))


def test_auto_precision_that_fails_the_gate_falls_back_to_fp32(tiny_model, tmp_path, cpu_host):
    """On a CPU with native bf16 auto picks bf16; if the gate refuses it, the compile says so and makes fp32."""
    cpu_host("avx512_bf16")
    messages: list[str] = []
    result = compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="cpu", out=tmp_path / "art",
                           tolerance=Tolerance(min_cosine=1.5), progress=messages.append)
    assert result.manifest["precision"] == "fp32"
    assert "fp32 after bf16 failed the numerics gate" in result.manifest["backend_reason"]
    assert any(m.startswith("auto: bf16 fails the numerics gate") for m in messages)
    with pytest.raises(NumericsError):  # a precision the user chose is never swapped behind their back
        compile_model(tiny_model, batch_sizes="1", seq_lens="8", backend="cpu", out=tmp_path / "b",
                      options=CompileOptions(auto_cast="matmult"), tolerance=Tolerance(min_cosine=1.5))


def test_seq_lens_auto_chooses_buckets_for_the_texts_and_records_why(tmp_path, minilm_resolved):
    texts = tmp_path / "traffic.txt"
    texts.write_text("\n".join(["hi there"] * 30 + ["a much longer sentence " * 6] * 10))
    result = compile_model(minilm_resolved, batch_sizes="1", seq_lens="auto", lengths_from=texts, max_buckets=2,
                           backend="cpu", out=tmp_path / "art", options=CompileOptions(auto_cast="none"))
    choice = result.manifest["bucket_choice"]
    seqs = sorted({b["seq"] for b in result.manifest["buckets"]})
    assert seqs == choice["seq_lens"] and len(seqs) == 2 and seqs[0] < seqs[1] <= 512
    assert choice["texts"] == 40 and 0.5 < choice["expected_padding_efficiency"] <= 1.0
    assert choice["lengths"]["max"] <= seqs[-1]


def test_seq_lens_auto_without_texts_is_the_default_grid(tiny_model, tmp_path):
    result = compile_model(tiny_model, batch_sizes="1", seq_lens="auto", backend="cpu", out=tmp_path / "art")
    assert sorted({b["seq"] for b in result.manifest["buckets"]}) == [32, 64, 128]  # tiny: 128 positions
    assert result.manifest["bucket_choice"] is None


def test_lengths_from_needs_auto_and_a_tokenizer(tiny_model, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    with pytest.raises(ConfigError, match="needs --seq-lens auto"):
        compile_model(tiny_model, seq_lens="16", lengths_from=texts, backend="cpu", out=tmp_path / "a")
    with pytest.raises(ConfigError, match="has none \\(random weights\\)"):
        compile_model(tiny_model, seq_lens="auto", lengths_from=texts, backend="cpu", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_the_cpu_runs_inputs_at_their_own_shape_and_splits_only_big_batches(compiled, tiny_model, tiny_config):
    """Fixed shapes are Neuron's (and TorchScript's) constraint: on the CPU padding would only add work."""
    model = load_compiled(compiled.path)
    seen = []
    for bucket in set(model.buckets.values()):  # the one program every bucket shares
        inner = bucket.module
        bucket.module = lambda *inputs, inner=inner: (seen.append(tuple(inputs[0].shape)), inner(*inputs))[1]
    ids, mask, types = sample_inputs(tiny_config, 9, 13, seed=4)
    got = model(ids, mask, types)
    assert not model.shapes.fixed and seen == [(4, 13), (4, 13), (1, 13)]  # split by the largest batch, unpadded
    with torch.no_grad():
        assert_close(got, tiny_model(ids, mask, types), mask, compiled.manifest["precision"])
    model.close()


class TestFixturesOfEveryScopeSeeOnePolicy:
    """A module-scoped fixture is built before any function-scoped patch applies: the CPU precision
    must come from the session's policy, not from whether this host (here: one reporting native bf16)
    has fast bf16."""

    @pytest.fixture(scope="class")
    def artifact_on_a_bf16_host(self, tiny_model, tmp_path_factory):
        from neuron_encoder import hardware
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
            patch.setenv(hardware.CPU_PRECISION_VARIABLE, "fp32")
            return compile_tiny(tiny_model, tmp_path_factory.mktemp("scope") / "art")

    def test_the_fp32_policy_holds_on_a_host_with_native_bf16(self, artifact_on_a_bf16_host, tiny_model, tiny_config):
        assert artifact_on_a_bf16_host.manifest["precision"] == "fp32"
        assert "NEURON_ENCODER_CPU_PRECISION" in artifact_on_a_bf16_host.manifest["backend_reason"]
        ids, mask, types = sample_inputs(tiny_config, 2, 16, seed=5)
        with torch.no_grad():
            expected = tiny_model(ids, mask, types)
        assert_close(load_compiled(artifact_on_a_bf16_host.path)(ids, mask, types), expected, mask, "fp32")

    def test_the_session_policy_reaches_module_scoped_fixtures(self, compiled):
        assert compiled.manifest["precision"] == cpu_precision()


@pytest.fixture(scope="module")
def classifier(tiny_config):
    """A tiny two-label classifier: the encoder with its head."""
    from neuron_encoder import Encoder
    torch.manual_seed(1)
    return Encoder(tiny_config.replace(num_labels=2)).eval()


def test_a_classifier_compiles_with_its_head_and_records_its_task(classifier, tiny_config, tmp_path):
    result = compile_model(classifier, batch_sizes="1,4", seq_lens="16,32", backend="cpu", out=tmp_path / "cls")
    assert result.manifest["task"] == {"kind": "classifier", "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
                                       "activation": "softmax"}
    assert "logit_error" in result.manifest["buckets"][0]["numerics"]  # the gate compared logits
    model = load_compiled(result.path)
    assert model.task.kind == "classifier"
    for batch, seq in ((3, 20), (9, 32), (1, 5)):  # padded, split, short
        ids, mask, types = sample_inputs(tiny_config, batch, seq, seed=5)
        with torch.inference_mode():
            expected = classifier(ids, mask, types)
        got = model.logits(ids, mask, types)
        assert got.shape == (batch, 2)
        assert_close(got, expected, mask, result.manifest["precision"])
    with pytest.raises(ConfigError, match="it does not embed"):
        model.embed(ids, mask)


def test_a_reduced_precision_classifier_is_gated_on_its_logits(classifier, tmp_path):
    result = compile_model(classifier, batch_sizes="2", seq_lens="16", backend="cpu", out=tmp_path / "bf16",
                           options=CompileOptions(auto_cast="all", auto_cast_type="bf16"))
    numerics = result.manifest["buckets"][0]["numerics"]
    assert numerics["rule"].startswith("max abs logit error") and 0 < numerics["logit_error"] <= 0.05


def test_an_embedder_artifact_has_no_logits(compiled, tiny_config):
    model = load_compiled(compiled.path)
    assert model.task.kind == "embedding" and compiled.manifest["task"]["kind"] == "embedding"
    with pytest.raises(ConfigError, match="embedding model: it has no logits"):
        model.logits(*sample_inputs(tiny_config, 1, 16))


def test_the_task_is_in_a_classifiers_cache_key_and_leaves_an_embedders_as_it_was(classifier, tiny_model):
    from neuron_encoder.compiler import _plan, _SeqChoice
    from neuron_encoder.models import load_model
    from neuron_encoder.task import Task
    sequences = _SeqChoice("16", None, 4)
    embedder = _plan(load_model(tiny_model), "1", sequences, "cpu", CompileOptions())
    assert "task" not in embedder.settings
    resolved = load_model(classifier)
    plans = [_plan(r, "1", sequences, "cpu", CompileOptions())
             for r in (resolved, resolved._replace(task=Task("classifier", ("no", "yes"), "softmax")))]
    assert plans[0].settings["task"]["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}
    assert plans[0].key != plans[1].key  # other labels: another artifact
