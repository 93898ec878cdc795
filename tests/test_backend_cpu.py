"""The CPU artifact's forward: fused layers compute what the eager encoder does, packed by oneDNN's
private ops where they run here and with torch's linears where a torch lacks them."""

from __future__ import annotations

import copy
import dataclasses
import types

import pytest
import torch

from neuron_encoder import Encoder
from neuron_encoder.backends import cpu
from neuron_encoder.compiler import compile_model
from neuron_encoder.runtime import load_compiled
from tests.conftest import assert_close, random_inputs


@pytest.fixture
def probe_again():
    """onednn_packs is probed once per process: forget it around a test that changes what it sees."""
    cpu.onednn_packs.cache_clear()
    yield
    cpu.onednn_packs.cache_clear()


def linears(model: torch.nn.Module) -> list[cpu.FusedLinear]:
    return [m for m in model.modules() if isinstance(m, cpu.FusedLinear)]


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_tanh"])
def test_fused_layers_compute_what_eager_does(tiny_config, monkeypatch, packed, norm_first, hidden_act):
    if packed and not cpu.onednn_packs("fp32"):
        pytest.skip("this torch has no usable oneDNN packing ops (the plain form is tested below)")
    monkeypatch.setattr(cpu, "onednn_packs", lambda precision: packed)
    torch.manual_seed(0)
    eager = Encoder(dataclasses.replace(tiny_config, norm_first=norm_first, hidden_act=hidden_act)).eval()
    fused = cpu.fuse_layers(copy.deepcopy(eager), "fp32")
    assert len(linears(fused)) == 4 * tiny_config.num_hidden_layers
    assert {m.packed for m in linears(fused)} == {packed}
    inputs = random_inputs(tiny_config, 3, 16, pad_from=9)
    with torch.inference_mode():
        torch.testing.assert_close(fused(*inputs), eager(*inputs), atol=2e-5, rtol=1e-4)


def test_without_the_private_ops_the_artifact_runs_torch_linears(tiny_model, tiny_config, tmp_path, monkeypatch,
                                                                  probe_again):
    """A torch above 2.2 may drop torch.ops.mkldnn's private ops: the probe says so once, nothing fails."""
    monkeypatch.setattr(torch, "ops", types.SimpleNamespace(mkldnn=types.SimpleNamespace()))  # none of them
    assert cpu.onednn_packs("fp32") is False and cpu.onednn_packs("bf16") is False
    result = compile_model(tiny_model, batch_sizes=[2], seq_lens=[16], backend="cpu", out=tmp_path / "a")
    inputs = random_inputs(tiny_config, 2, 16, pad_from=9)
    with load_compiled(result.path) as model, torch.inference_mode():
        assert {m.packed for m in linears(model.buckets[(2, 16)].module)} == {False}
        assert_close(model(*inputs), tiny_model(*inputs), inputs[1], result.manifest["precision"])


def test_ops_with_another_signature_are_not_used(monkeypatch, probe_again):
    def changed(*args):
        raise TypeError("_linear_pointwise() takes 3 arguments")
    changed.binary = changed
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", changed, raising=False)
    assert cpu.onednn_packs("fp32") is False


def test_the_probe_leaves_the_callers_random_stream_alone(probe_again):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    cpu.onednn_packs("fp32")
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture
def plans(monkeypatch):
    """How many-row calls run, decided by the test instead of a timing (which shapes it asked about)."""
    monkeypatch.setattr(cpu, "_MANY_ROWS", {})
    asked, verdict = [], {"plan": "blocks"}

    def timed(linear):
        asked.append(tuple(linear.dense_weight.shape))
        return verdict["plan"]
    monkeypatch.setattr(cpu, "many_rows_plan", timed)
    return types.SimpleNamespace(asked=asked, verdict=verdict)


@pytest.mark.parametrize("plan", ["blocks", "wide"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sublayer_ends_run_many_rows_by_their_plan_and_compute_the_same(tiny_config, monkeypatch, plans,
                                                                       precision, plan):
    """W_O and the down projection run calls of more than ROW_BLOCK rows by their timed plan: blocks of
    unequal inputs with the residual, or the wide packing, give the whole result. Each shape is timed
    once; the dense weights are dropped once planned, and a wide packing exists only where it is used."""
    if not cpu.onednn_packs(precision):
        pytest.skip(f"no oneDNN {precision} packing here (torch's linears then run, whole)")
    torch.manual_seed(0)
    encoder = Encoder(tiny_config).eval().to(cpu.DTYPES[precision])
    monkeypatch.setattr(cpu, "ROW_BLOCK", 7)
    plans.verdict["plan"] = plan
    layers = [cpu.FusedLayer(copy.deepcopy(layer), tiny_config.hidden_act, packed=True) for layer in encoder.layers]
    layer = layers[0]
    assert layer.attention.out.many_rows == plan and layer.down.many_rows == plan
    assert layer.attention.qkv.many_rows == "whole" and layer.up.many_rows == "whole"  # no residual: never timed
    assert (layer.down.wide_weight is not None) == (plan == "wide") and layer.up.wide_weight is None
    assert {m.dense_weight is None for m in linears(layer)} == {True}
    h, i = tiny_config.hidden_size, tiny_config.intermediate_size
    assert sorted(plans.asked) == sorted({(h, h), (h, i)})  # once per shape, whatever the layer count
    x = torch.randn(3, 10, h).to(cpu.DTYPES[precision])  # 30 rows: five blocks of 6
    residual = torch.randn_like(x)
    with torch.inference_mode():
        planned = layer.down(layer.up(x), residual)
        layer.down.many_rows = "whole"
        whole = layer.down(layer.up(x), residual)
        few_rows = layer.down(layer.up(x[:, :2]), residual[:, :2])  # 6 rows: whole, whatever the plan
    assert planned.shape == whole.shape == x.shape
    tolerance = {"fp32": (1e-5, 1e-5), "bf16": (0.05, 0.02)}[precision]
    torch.testing.assert_close(planned.float(), whole.float(), atol=tolerance[0], rtol=tolerance[1])
    torch.testing.assert_close(few_rows.float(), whole[:, :2].float(), atol=tolerance[0], rtol=tolerance[1])


def test_where_no_plan_pays_every_matmul_runs_whole(tiny_config, plans):
    if not cpu.onednn_packs("fp32"):
        pytest.skip("this torch has no usable oneDNN packing ops")
    plans.verdict["plan"] = "whole"
    layer = cpu.FusedLayer(copy.deepcopy(Encoder(tiny_config).layers[0]), tiny_config.hidden_act, packed=True)
    assert {m.many_rows for m in linears(layer)} == {"whole"}
    assert {m.wide_weight for m in linears(layer)} == {None}


def test_the_plan_timing_runs_every_form_and_leaves_the_linear_whole(tiny_config, monkeypatch):
    if not cpu.onednn_packs("fp32"):
        pytest.skip("this torch has no usable oneDNN packing ops")
    monkeypatch.setattr(cpu, "ROW_BLOCK", 4)
    linear = cpu.FusedLinear(torch.nn.Linear(tiny_config.intermediate_size, tiny_config.hidden_size))
    seen = []
    real = cpu.FusedLinear._matmul

    def spy(self, x, residual, weight):
        seen.append((x.shape[0], "wide" if weight is self.wide_weight else "usual"))
        return real(self, x, residual, weight)
    monkeypatch.setattr(cpu.FusedLinear, "_matmul", spy)
    assert cpu.many_rows_plan(linear) in ("whole", "blocks", "wide")
    assert linear.many_rows == "whole" and linear.wide_weight is None  # the caller decides
    for rows in (8, 16):  # 2 and 4 x ROW_BLOCK rows, four calls of each plan
        assert seen.count((rows, "usual")) == 4 and seen.count((rows, "wide")) == 4
    assert seen.count((4, "usual")) == 4 * 2 + 4 * 4  # blocks: two blocks of 4, then four
