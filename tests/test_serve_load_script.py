"""benchmarks/serve_load.py's parts on a tiny model: the offline baseline, the load generator against a
server on loopback, and the table with its targets (the full run is minutes: a benchmark, not a test)."""

from __future__ import annotations

import types

from neuron_encoder import load_compiled
from neuron_encoder.bench.workload import CORPUS

from . import scripts
from .serve_helpers import ThreadServer



def load_script():
    return scripts.load_script("benchmarks/serve_load.py", "serve_load")


def test_offline_and_served_numbers_and_the_verdicts(tiny_text_artifact, capsys, tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "SEQ", 64)  # the tiny artifact's largest bucket
    with load_compiled(tiny_text_artifact) as model:
        rates, single_p50 = script.offline(model, list(CORPUS), [1, 4], duration=0.2)
        tokenizer = model.tokenizer
        with ThreadServer(artifact=str(tiny_text_artifact), auto_truncate=True) as server:
            served = script.drive(server.url + "/v1", tokenizer, list(CORPUS), clients=2, per_request=1,
                                  duration=0.3)
            paired = script.paired_single(model, server.url + "/v1", list(CORPUS)[:40], duration=0.3)
    assert set(rates) == {1, 4} and all(rate > 0 for rate in rates.values()) and single_p50 > 0
    assert served["errors"] == 0 and served["rate"] > 0 and served["p50"] > 0
    assert paired["served"] > 0 and paired["offline"] > 0 and paired["added"] == paired["added"]  # not NaN
    rows = [{"system": "ours", "corpus": "built-in", "clients": c, "per_request": 1, **served} for c in (1, 32)]
    rows.append({"system": "infinity", "corpus": "built-in", "clients": 32, "per_request": 1, **served,
                 "rate": served["rate"] / 4})
    script.report({"built-in": {"rates": rates, "single_p50": single_p50, "st": 1.0, "paired": paired}}, rows)
    out = capsys.readouterr().out
    assert "32 clients / Infinity = 4.00x (target >= 3): met" in out
    assert "32 clients / offline best" in out and "added (median per text; target <= 2)" in out
    corpora = script.load_corpora(str(tmp_path / "mine.txt")) if (tmp_path / "mine.txt").write_text("a\n\nb\n") else {}
    assert corpora["mine.txt"] == ["a", "b"] and corpora["built-in"] == list(CORPUS)


def test_the_near_zero_model_is_the_seeded_encoder_under_hugging_face_names(tmp_path):
    import dataclasses

    import torch

    from neuron_encoder import Encoder, preset
    from neuron_encoder.models import load_model
    script = load_script()
    resolved = load_model(str(script.near_zero_checkpoint(tmp_path / "near-zero")))
    config = dataclasses.replace(preset("minilm-l6"), **script.NEAR_ZERO_SHAPE)
    assert resolved.encoder.config == config and resolved.tokenizer is not None
    torch.manual_seed(0)
    expected = Encoder(config).state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in resolved.encoder.state_dict().items())


def test_the_ceiling_under_both_load_generators_and_its_cpu_per_request(tmp_path):
    import shutil

    from neuron_encoder.bench.endpoints import parse_embeddings
    from neuron_encoder.text import Tokenizer
    from neuron_encoder.weights import resolve
    script = load_script()
    assert parse_embeddings("openai", script.CEILING_ANSWER).shape == (1, 32)
    assert script.lua_string("a]]b]=]c") == "[==[a]]b]=]c]==]"
    generator = script.LoadGenerator(list(CORPUS)[:20], Tokenizer(resolve("minilm")), tmp_path)
    assert generator.script.read_text().count("[[{") == 20  # one long-bracket body a text
    with script.running("ceiling", lambda: script.start_ceiling(tmp_path)) as ceiling:
        if shutil.which("wrk"):  # CI installs no OS packages: wrk is optional there
            by_wrk = script.under_load(ceiling, generator, connections=4, duration=1)
            assert by_wrk["errors"] == 0 and by_wrk["requests"] > 0 and by_wrk["cpu_ms"] > 0
            assert generator.commands and "(C)" in generator.describe()
        generator.wrk = None
        ours = script.under_load(ceiling, generator, connections=2, duration=0.3)
    assert ours["errors"] == 0 and ours["requests"] > 0 and ours["p50"] > 0
    assert "own client" in generator.describe()


def test_the_profile_summary_and_the_near_zero_report(capsys, tmp_path):
    script = load_script()
    raw = ("main (app.py);handle (app.py);parse (json.py) 5\nmain (app.py);embed (model.py) 3\n"
           "main (app.py);handle (app.py) 1\nmain (app.py) 1\n")
    top = script.profile_top(raw, top=2)  # the 2 with most samples of their own, then the 2 most under
    assert top == [("parse (json.py)", 50.0, 50.0), ("embed (model.py)", 30.0, 30.0),
                   ("main (app.py)", 10.0, 100.0), ("handle (app.py)", 10.0, 60.0)]
    generator = script.LoadGenerator(["a text"], None, tmp_path)
    generator.wrk = None
    row = {"p99": 9.0, "errors": 0, "requests": 100, "cpu_ms": 0.2}
    rows = [{**row, "system": "ours", "connections": 64, "rate": 5000.0, "p50": 12.0},
            {**row, "system": "ours", "connections": 1, "rate": 900.0, "p50": 1.1},
            {**row, "system": "ceiling", "connections": 64, "rate": 20000.0, "p50": 3.0},
            {**row, "system": "infinity", "connections": 64, "rate": 1000.0, "p50": 60.0}]
    model_ms = {"paced": 0.8, "back to back": 0.65, "threads": 1}
    script.near_zero_report(rows, model_ms=model_ms, generator=generator, top=top)
    out = capsys.readouterr().out
    assert "0.25        5.00" in out  # ours against the ceiling, then against Infinity, at 64 connections
    assert "5000/s, 0 errors: met" in out and "own client" in out
    # judged against the back-to-back call, the one paced as one connection paces it shown beside it
    assert "target <= 0.5 ms added at 1 connection: 0.450 ms (0.300 ms over the paced call): met" in out
    assert "50.0    50.0  parse (json.py)" in out
    script.near_zero_report(rows, model_ms={**model_ms, "back to back": 0.55}, generator=generator, top=None)
    assert "0.550 ms (0.300 ms over the paced call): MISSED" in capsys.readouterr().out


def test_the_paced_call_sleeps_before_every_call(monkeypatch):
    """paced_call idles before each timed call, and times only the call."""
    script = load_script()
    calls, slept = [], []
    model = types.SimpleNamespace(tokenizer=types.SimpleNamespace(
        encode=lambda texts, truncate: types.SimpleNamespace(as_tuple=lambda: (texts,))),
        embed=lambda texts: calls.append(texts))
    monkeypatch.setattr(script.time, "sleep", lambda seconds: slept.append(seconds))
    assert script.paced_call(model, ["a", "b"], duration=0.01, gap_s=0.25) > 0
    assert len(calls) == len(slept) > 1 and set(slept) == {0.25}
    assert calls[:2] == [["a"], ["b"]]


def test_the_cpu_line_names_how_idle_cpus_wait(tmp_path, monkeypatch):
    """A VM's haltpoll says how long it polls before halting; another driver is named; none is said."""
    script = load_script()
    driver, poll = tmp_path / "current_driver", tmp_path / "guest_halt_poll_ns"
    monkeypatch.setattr(script, "CPUIDLE_DRIVER", driver)
    monkeypatch.setattr(script, "HALT_POLL_NS", poll)
    assert script.cpu_idle() == "cpuidle: not reported"
    driver.write_text("haltpoll\n")
    poll.write_text("200000\n")
    assert script.cpu_idle() == "cpuidle: haltpoll, polls 200 us before halting"
    poll.write_text("0\n")
    assert script.cpu_idle() == "cpuidle: haltpoll, polls 0 us before halting"
    poll.unlink()
    assert script.cpu_idle() == "cpuidle: haltpoll"
    driver.write_text("intel_idle\n")
    assert script.cpu_idle() == "cpuidle: intel_idle"
