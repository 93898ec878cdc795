"""Tests of the torch_neuronx TEST DOUBLE itself (tests/neuron_double.py).

The other tests trust the double to behave like the SDK as its documentation describes it; these tests
pin that behaviour down, each with the documented rule it follows: flags validated like neuronx-cc
(--lnc only where the target has logical cores), cpu_backend needing a target, the compiler's work
directory and log, fixed shapes, placement at load on the least used core or neuron_cores_context's, the
runtime reading NEURON_RT_* once and refusing non-contiguous cores, NEFFs bound to their NeuronCore
generation and LNC (trn1 on trn2 with NEURON_RT_ALLOW_LEGACY_NEFF), save/load. Only the API neuron-encoder
calls is emulated.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import sys

import pytest
import torch

from tests.neuron_double import NEURONX_CC_VERSION, TORCH_NEURONX_VERSION, install, parse_compiler_args

from neuron_encoder import hardware, platforms

SEQ, VOCAB, HIDDEN = 8, 32, 16


class TinyEncoder(torch.nn.Module):
    """BERT's interface in miniature: (input_ids, attention_mask, token_type_ids) -> hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.word = torch.nn.Embedding(VOCAB, HIDDEN)
        self.token_type = torch.nn.Embedding(2, HIDDEN)
        self.dense = torch.nn.Linear(HIDDEN, HIDDEN)
        self.norm = torch.nn.LayerNorm(HIDDEN)

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.word(input_ids) + self.token_type(token_type_ids)  # (B, T, H)
        scores = (x @ x.transpose(1, 2)) / HIDDEN**0.5 + (1.0 - attention_mask[:, None, :].float()) * -1e4
        x = self.norm(x + self.dense(scores.softmax(-1) @ x))
        return x, x[:, 0]


def bert_inputs(batch: int = 2, seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch * 100 + seq)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=generator)
    return ids, torch.ones(batch, seq, dtype=torch.int64), torch.zeros(batch, seq, dtype=torch.int64)


@pytest.fixture(autouse=True)
def clean_neuron_env(monkeypatch, tmp_path):
    for name in ("NEURON_RT_VISIBLE_CORES", "NEURON_RT_NUM_CORES", "NEURON_PLATFORM_TARGET_OVERRIDE",
                 "NEURON_LOGICAL_NC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # neuronx-cc writes its log to the working directory without --logfile


@pytest.fixture(scope="module")
def encoder() -> TinyEncoder:
    torch.manual_seed(0)
    return TinyEncoder().eval()


@pytest.fixture
def tnx(monkeypatch):
    """An inf2.xlarge: one Neuron device, two NeuronCores."""
    return install(monkeypatch, devices=1)


def test_install_looks_like_the_sdk_to_probes(tnx):
    import neuronxcc
    import torch_neuronx

    assert torch_neuronx is tnx and importlib.util.find_spec("torch_neuronx") is not None
    assert torch_neuronx.__version__ == TORCH_NEURONX_VERSION
    assert neuronxcc.__version__ == NEURONX_CC_VERSION
    assert importlib.metadata.version("torch-neuronx") == TORCH_NEURONX_VERSION
    assert importlib.metadata.version("neuronx-cc") == NEURONX_CC_VERSION


def test_install_is_undone_after_the_test():
    assert "torch_neuronx" not in sys.modules or not hasattr(sys.modules["torch_neuronx"], "double")


def test_without_the_compiler_trace_fails_like_the_sdk(monkeypatch, encoder):
    tnx = install(monkeypatch, devices=1, neuronx_cc=False)
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("neuronx-cc")
    with pytest.raises(RuntimeError, match="neuronx-cc is not installed"):
        tnx.trace(encoder, bert_inputs())


def test_trace_returns_a_scriptmodule_with_real_outputs(tnx, encoder):
    inputs = bert_inputs()
    traced = tnx.trace(encoder, inputs, compiler_args="--target inf2 --model-type transformer")
    assert isinstance(traced, torch.jit.ScriptModule)
    assert tnx.double.is_double_trace(traced)
    for got, want in zip(traced(*inputs), encoder(*inputs)):
        torch.testing.assert_close(got, want)
    assert tnx.double.calls_to("trace")[0].kwargs["compiler_args"] == "--target inf2 --model-type transformer"


@pytest.mark.parametrize("compiler_args", [
    "--auto-cast none --optlevel 2 --target inf2 --model-type transformer",  # optimum-neuron's encoder default
    ["--auto-cast", "matmult", "--auto-cast-type", "bf16", "--optlevel", "2", "--target", "inf2"],
    "--target=trn1 -O1 --enable-saturate-infinity --enable-fast-loading-neuron-binaries",
    "--target trn2 -O3 --auto-cast all --auto-cast-type fp8_e4m3 --model-type generic",
    "--target trn1n --optlevel 1 --auto-cast-type fp16",
    "--target inf2 --auto-cast matmult --disable-mixed-precision-accumulation",  # pre-2.27 behaviour
    "--target trn2 --logical-nc-config 1", "--target trn2 -lnc 2", "--target trn2 --lnc 1",
    "--target trn1 --lnc 1",  # EARG001: "On trn1, only lnc=1 is supported"
])
def test_documented_flags_are_accepted(monkeypatch, encoder, compiler_args):
    tnx = install(monkeypatch, devices=0)  # a build host: any target compiles
    tnx.trace(encoder, bert_inputs(), compiler_args=compiler_args, cpu_backend=True)
    assert tnx.double.compilations[-1].target in {"inf2", "trn1", "trn1n", "trn2"}


@pytest.mark.parametrize("compiler_args", ["--target inf2 -lnc 2", "--target trn1 --lnc 2",
                                           "--target inf2 --logical-nc-config 2"])
def test_lnc_2_fails_off_trn2_with_earg001(monkeypatch, encoder, tmp_path, compiler_args):
    tnx = install(monkeypatch, devices=0)
    with pytest.raises(RuntimeError, match="neuronx-cc failed"):
        tnx.trace(encoder, bert_inputs(), compiler_args=compiler_args, cpu_backend=True)
    assert "NCC_EARG001" in (tmp_path / "log-neuron-cc.txt").read_text()


def test_parsed_flags_and_defaults():
    options = parse_compiler_args("-O3 --target inf2")
    assert (options["optlevel"], options["auto_cast"], options["model_type"]) == ("3", "none", "generic")
    assert parse_compiler_args(["--auto-cast", "all", "--auto-cast", "matmult"])["auto_cast"] == "matmult"


@pytest.mark.parametrize("bad, message", [
    ("--fast-math", "unrecognized arguments: --fast-math"),
    ("--auto-cast matmul", "invalid choice: 'matmul'"),  # the flag is spelled matmult
    ("--target inf1", "invalid choice: 'inf1'"),
    ("-O4", "invalid choice: '4'"),
    ("--auto-cast-type int8", "invalid choice: 'int8'"),
])
def test_bad_flags_fail_like_neuronx_cc(tnx, encoder, tmp_path, bad, message):
    with pytest.raises(RuntimeError, match="neuronx-cc failed with 2"):
        tnx.trace(encoder, bert_inputs(), compiler_args=f"--target inf2 {bad}", compiler_workdir=tmp_path / "w")
    assert message in (tmp_path / "log-neuron-cc.txt").read_text()  # the working directory: no --logfile


def test_cpu_backend_needs_a_target_on_a_host_without_devices(monkeypatch, encoder):
    tnx = install(monkeypatch, devices=0)
    with pytest.raises(RuntimeError, match="please supply compiler argument target"):
        tnx.trace(encoder, bert_inputs(), compiler_args="--auto-cast none", cpu_backend=True)
    tnx.trace(encoder, bert_inputs(), compiler_args="--target inf2", cpu_backend=True)
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn1")
    tnx.trace(encoder, bert_inputs(), cpu_backend=True)
    assert tnx.double.compilations[-1].target == "trn1"
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "inf1")
    with pytest.raises(ValueError, match="not a valid instance type"):
        tnx.trace(encoder, bert_inputs(), cpu_backend=True)


def test_without_cpu_backend_tracing_needs_a_neuron_device(monkeypatch, encoder):
    tnx = install(monkeypatch, devices=0)
    with pytest.raises(RuntimeError, match=r"num_devices > 0"):
        tnx.trace(encoder, bert_inputs(), compiler_args="--target inf2")


def test_a_model_compiled_on_cpu_does_not_run_without_hardware(monkeypatch, encoder):
    tnx = install(monkeypatch, devices=0)
    traced = tnx.trace(encoder, bert_inputs(), compiler_args="--target inf2", cpu_backend=True)
    with pytest.raises(RuntimeError, match="Runtime could not be initialized"):
        traced(*bert_inputs())


def test_compiler_workdir_holds_graph_weights_and_neff_and_the_log_goes_to_logfile(tnx, encoder, tmp_path):
    """What the real trace leaves (torch_neuronx/xla_impl/trace.py): model/graph.hlo, a .npy per weight,
    model/metadata.json, graph.neff, command.txt; the log at --logfile."""
    workdir, log = tmp_path / "bucket_128", tmp_path / "logs" / "cc.txt"
    tnx.trace(encoder, bert_inputs(), compiler_workdir=workdir,
              compiler_args=["--target", "inf2", "--auto-cast", "matmult", "--logfile", str(log)])
    names = {str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file()}
    assert {"model/graph.hlo", "model/metadata.json", "graph.neff", "command.txt"} <= names
    assert {f"model/weights/{name}.npy" for name in encoder.state_dict()} <= names
    weights = sum((workdir / "model" / "weights" / f"{n}.npy").stat().st_size for n in encoder.state_dict())
    assert weights >= sum(t.numel() * t.element_size() for t in encoder.state_dict().values())
    assert (workdir / "graph.neff").stat().st_size >= weights / 2  # weights are inlined in the NEFF
    text = log.read_text()
    assert "--auto-cast matmult" in text and "Compiler status PASS" in text and "TEST DOUBLE" in text
    assert not (tmp_path / "log-neuron-cc.txt").exists()
    assert tnx.double.compilations[-1].compiler_workdir == str(workdir)


def test_without_a_workdir_the_work_files_go_to_a_temporary_directory(tnx, encoder, tmp_path):
    tnx.trace(encoder, bert_inputs(), compiler_args="--target inf2")
    assert [p.name for p in tmp_path.iterdir()] == ["log-neuron-cc.txt"]


def test_auto_cast_gives_reduced_precision_error(tnx, encoder):
    inputs = bert_inputs()
    want = encoder(*inputs)[0]
    exact = tnx.trace(encoder, inputs, compiler_args="--target inf2 --auto-cast none")(*inputs)[0]
    bf16 = tnx.trace(encoder, inputs, compiler_args="--target inf2 --auto-cast matmult")(*inputs)[0]
    bf16_all = tnx.trace(encoder, inputs, compiler_args="--target inf2 --auto-cast all")(*inputs)[0]
    torch.testing.assert_close(exact, want)
    assert 0 < (bf16 - want).abs().max() < 0.1
    assert (bf16_all - want).abs().max() >= (bf16 - want).abs().max()


def test_shapes_and_dtypes_are_fixed(tnx, encoder):
    traced = tnx.trace(encoder, bert_inputs(batch=2), compiler_args="--target inf2")
    with pytest.raises(RuntimeError, match=r"compiled for \[2, 8\]"):
        traced(*bert_inputs(batch=3))
    with pytest.raises(RuntimeError, match=r"compiled for \[2, 8\]"):
        traced(*bert_inputs(batch=2, seq=16))
    with pytest.raises(RuntimeError, match="dtype"):
        traced(*(t.to(torch.int32) for t in bert_inputs(batch=2)))


def test_save_and_load_round_trip(tnx, encoder, tmp_path):
    inputs = bert_inputs()
    traced = tnx.trace(encoder, inputs, compiler_args="--target inf2")
    torch.jit.save(traced, tmp_path / "model.pt")
    loaded = torch.jit.load(tmp_path / "model.pt")
    assert tnx.double.is_double_trace(loaded)
    torch.testing.assert_close(loaded(*inputs)[1], encoder(*inputs)[1])


def test_loads_are_placed_at_load_time_on_the_least_used_core(tnx, encoder, tmp_path):
    """api-torch-neuronx-trace.rst: a traced model is loaded to a NeuronCore upon torch.jit.load, in linear
    order over the least used cores; a freed model gives its core back."""
    torch.jit.save(tnx.trace(encoder, bert_inputs(), compiler_args="--target inf2"), tmp_path / "m.pt")
    first, second = torch.jit.load(tmp_path / "m.pt"), torch.jit.load(tmp_path / "m.pt")
    assert sorted(p.start_nc for p in tnx.double.placements.values()) == [0, 1]  # before any run
    del first
    gc.collect()
    third = torch.jit.load(tmp_path / "m.pt")  # core 0 is free again
    for model in (second, third):
        model(*bert_inputs())
    assert [run.core for run in tnx.double.executions] == [1, 0]


def test_the_runtime_reads_its_variables_once_when_it_starts(tnx, encoder, monkeypatch):
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "1")
    assert tnx.double.visible_cores() == 1  # starts the runtime
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "0-1")
    assert tnx.double.visible_cores() == 1  # too late: read at start


@pytest.mark.parametrize("spec", ["0,2", "0-1,3", "1,0"])
def test_the_runtime_refuses_non_contiguous_cores(monkeypatch, spec):
    """nrt-developer-guide.rst: "The resulting range must be contiguous", in increasing order."""
    tnx = install(monkeypatch, devices=2)
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", spec)
    with pytest.raises(RuntimeError, match="not contiguous"):
        tnx.double.visible_cores()


@pytest.mark.parametrize("platform, lnc, cores", [("inf2", None, 4), ("trn1", None, 4), ("trn2", None, 8),
                                                  ("trn2", "2", 8), ("trn2", "1", 16)])
def test_cores_per_device_follow_the_family_and_lnc(monkeypatch, platform, lnc, cores):
    tnx = install(monkeypatch, devices=2, platform=platform)
    if lnc:
        monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", lnc)
    assert tnx.double.visible_cores() == cores


def test_a_neff_runs_only_on_its_generation_and_lnc(monkeypatch, encoder, tmp_path):
    """optimum-neuron's export guide: trn2 models do not run on inf2, nor inf2 models on trn2; trn1 code
    runs on inf2 (same NeuronCore-v2). logical-neuroncore-config.rst: compiler and runtime LNC must match."""
    build = install(monkeypatch, devices=0)
    for target, args in (("inf2", ""), ("trn1", ""), ("trn2", ""), ("trn2-lnc1", "--lnc 1")):
        model = build.trace(encoder, bert_inputs(), compiler_args=f"--target {target[:4]} {args}", cpu_backend=True)
        torch.jit.save(model, tmp_path / f"{target}.pt")
    install(monkeypatch, devices=1, platform="inf2")
    torch.jit.load(tmp_path / "inf2.pt")
    torch.jit.load(tmp_path / "trn1.pt")
    with pytest.raises(RuntimeError, match="compiled for trn2"):
        torch.jit.load(tmp_path / "trn2.pt")
    install(monkeypatch, devices=1, platform="trn2")
    torch.jit.load(tmp_path / "trn2.pt")
    with pytest.raises(RuntimeError, match="compiled for inf2"):
        torch.jit.load(tmp_path / "inf2.pt")
    with pytest.raises(RuntimeError, match="LNC=1, runtime uses LNC=2"):
        torch.jit.load(tmp_path / "trn2-lnc1.pt")
    with pytest.raises(RuntimeError, match="compiled for trn1"):
        torch.jit.load(tmp_path / "trn1.pt")
    install(monkeypatch, devices=1, platform="trn2")  # configuration-guide.rst: trn1 NEFFs on trn2, if allowed
    monkeypatch.setenv("NEURON_RT_ALLOW_LEGACY_NEFF", "TRUE")
    torch.jit.load(tmp_path / "trn1.pt")


def test_cores_held_by_another_process(monkeypatch, encoder, tmp_path):
    build = install(monkeypatch, devices=0)
    torch.jit.save(build.trace(encoder, bert_inputs(), compiler_args="--target inf2", cpu_backend=True),
                   tmp_path / "m.pt")
    tnx = install(monkeypatch, devices=1)
    tnx.double.busy = True  # configuration-guide.rst: a reserved core serves no other process
    with pytest.raises(RuntimeError, match=r"NeuronCore\(s\) not available"):
        torch.jit.load(tmp_path / "m.pt")


def test_a_load_that_asks_for_cores_that_are_not_visible_fails(monkeypatch, encoder, tmp_path):
    build = install(monkeypatch, devices=0)
    torch.jit.save(build.trace(encoder, bert_inputs(), compiler_args="--target inf2", cpu_backend=True),
                   tmp_path / "m.pt")
    install(monkeypatch, devices=1)
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "5")
    with pytest.raises(RuntimeError, match=r"NeuronCore\(s\) not available"):
        torch.jit.load(tmp_path / "m.pt")


def test_core_placement(tnx, encoder, tmp_path):
    """api-torch-neuronx-core-placement.rst: models loaded inside neuron_cores_context go to its cores,
    round robin; the experimental name still works, with a deprecation warning."""
    torch.jit.save(tnx.trace(encoder, bert_inputs(), compiler_args="--target inf2"), tmp_path / "m.pt")
    with tnx.neuron_cores_context(start_nc=0, nc_count=2):
        loaded = torch.jit.load(tmp_path / "m.pt")
    loaded(*bert_inputs())
    loaded(*bert_inputs())
    assert [run.core for run in tnx.double.executions[-2:]] == [0, 1]
    with pytest.raises(ValueError):
        with tnx.neuron_cores_context(start_nc=1, nc_count=2):
            torch.jit.load(tmp_path / "m.pt")
    with pytest.warns(DeprecationWarning, match="Call torch_neuronx.neuron_cores_context instead"):
        with tnx.experimental.neuron_cores_context(start_nc=1, nc_count=1):
            again = torch.jit.load(tmp_path / "m.pt")
    again(*bert_inputs())
    assert tnx.double.executions[-1].core == 1


def test_data_dependent_ops_do_not_compile(tnx):
    def nonzero(x):
        return torch.nonzero(x)

    with pytest.raises(RuntimeError, match="neuronx-cc failed with 70"):
        tnx.trace(nonzero, torch.ones(4), compiler_args="--target inf2")


def test_only_what_neuron_encoder_calls_is_emulated(tnx):
    """The double keeps to the API the package uses, so a call outside it fails here as it would be untested."""
    assert callable(tnx.trace) and callable(tnx.neuron_cores_context)
    for name in ("DataParallel", "dynamic_batch", "analyze", "lazy_load", "async_load", "set_neuron_cores"):
        assert not hasattr(tnx, name), name


def test_the_double_is_the_documented_pair():
    """setup/pytorch/manual.rst (Neuron 2.32) installs exactly this pair; our install hint names it too."""
    assert platforms.RELEASES["2.32"].pins == f"neuronx-cc=={NEURONX_CC_VERSION} torch-neuronx=={TORCH_NEURONX_VERSION}"
    assert platforms.pip_install("2.32") in hardware.NEURON_INSTALL_HINT
