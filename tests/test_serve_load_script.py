"""benchmarks/serve_load.py's parts on a tiny model: the offline baseline, the load generator against a
server on loopback, and the table with its targets (the full run is minutes: a benchmark, not a test)."""

from __future__ import annotations

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
