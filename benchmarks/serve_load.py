"""The server under load, beside the same artifact offline, sentence-transformers and Infinity: one run.

all-MiniLM-L6-v2 (shipped) compiled for this host in the server's default buckets, on the built-in
corpus and, with --corpus FILE (one text per line), on yours. Measured, one after the other:
- offline: the artifact in this process, texts sorted by length (as sentence-transformers does) in
  batches of each compiled batch size, tokenization included; the best batch size is the baseline;
- ours: `neuron-encoder serve` in a subprocess, driven closed-loop at each --clients count with
  --per-request sentences per request (POST /v1/embeddings, base64, as the openai client sends it),
  through the benchmark's own loop (bench.loop.measure, bench.endpoints.http_engine);
- sentence-transformers: SentenceTransformer.encode(batch_size=32) offline, on the same checkpoint;
- Infinity (infinity-emb, torch engine, the same checkpoint directory), installed by this script in a
  virtual environment of its own and driven by the same load generator; skipped, saying why, if it
  cannot be installed or started. That environment reuses this interpreter's torch through a .pth
  file, so pip never downloads another (multi-GB) torch.
Targets on a 2-core host shared with the load generator, at 32 clients and one sentence per request:
ours >= 0.8x offline best-batch sentences/s and >= 3x Infinity's; at 1 client <= 2 ms added to the
offline batch-1 call, measured by alternating the two on each text (paired_single), so drift in a
shared host's speed between two separate runs does not count as the server's.
Usage: python benchmarks/serve_load.py [--corpus FILE] [--duration 10] [--clients 1,8,32,128]
       [--per-request 1,32] [--no-infinity] [--replicas N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from neuron_encoder import hardware, load_compiled
from neuron_encoder.bench.endpoints import http_engine
from neuron_encoder.bench.loop import measure
from neuron_encoder.bench.stats import latency_summary
from neuron_encoder.bench.workload import CORPUS, corpus_workload
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import run_main
from neuron_encoder.serve.settings import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENS
from neuron_encoder.weights import resolve

ROOT = Path(__file__).resolve().parents[1]
INFINITY = "infinity-emb[server,torch]==0.0.78"
SERVED_NAME = "minilm"
SEQ = int(DEFAULT_SEQ_LENS.split(",")[-1])  # inputs longer than the largest bucket are cut, everywhere


def offline(model, texts: list[str], batch_sizes: list[int], duration: float) -> tuple[dict[int, float], float]:
    """Sentences/s at each batch size (texts sorted by token count, tokenised per batch), and the p50 ms
    of a batch-1 call (tokenise + embed one text)."""
    tokenizer = model.tokenizer
    order = sorted(texts, key=lambda text: len(tokenizer.token_ids([text])[0]))
    model.warm_up()  # as the server does before it reports ready
    rates, single = {}, []
    with torch.inference_mode():
        for batch in batch_sizes:
            chunks = [order[i:i + batch] for i in range(0, len(order), batch)] or [order]
            for chunk in chunks:  # every shape this batch size meets, once, untimed
                model.embed(*tokenizer.encode(chunk, truncate=True).as_tuple())
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < duration:  # whole passes: every length counts, as served
                for chunk in chunks:
                    t0 = time.perf_counter_ns()
                    model.embed(*tokenizer.encode(chunk, truncate=True).as_tuple())
                    if batch == 1:
                        single.append((time.perf_counter_ns() - t0) / 1e6)
                    done += len(chunk)
            rates[batch] = done / (time.perf_counter() - start)
    return rates, statistics.median(single) if single else float("nan")


def paired_single(model, url: str, texts: list[str], duration: float) -> dict:
    """The latency the server adds at one client, measured side by side: each text is embedded offline
    (tokenise + embed, in this process) and then sent as one request, alternately, so both calls see the
    same host; the p50 of each and the median of the per-text differences, in ms."""
    engine = http_engine(url, "openai", model.tokenizer, model=SERVED_NAME)
    encoded = [model.tokenizer.encode([text], truncate=True) for text in texts]
    offline_ms, served_ms = [], []
    with torch.inference_mode():
        for batch in encoded[:16]:  # warm-up: both sides, and the request bodies built once
            model.embed(*batch.as_tuple())
            engine.run(*batch.as_tuple()[:2])
        start, turn = time.perf_counter(), 0
        while time.perf_counter() - start < duration:
            batch = encoded[turn % len(encoded)]
            t0 = time.perf_counter_ns()
            model.embed(*model.tokenizer.encode([texts[turn % len(texts)]], truncate=True).as_tuple())
            t1 = time.perf_counter_ns()
            engine.run(*batch.as_tuple()[:2])
            t2 = time.perf_counter_ns()
            offline_ms.append((t1 - t0) / 1e6)
            served_ms.append((t2 - t1) / 1e6)
            turn += 1
    return {"offline": statistics.median(offline_ms), "served": statistics.median(served_ms),
            "added": statistics.median(b - a for a, b in zip(offline_ms, served_ms))}


def sentence_transformers(texts: list[str], duration: float) -> float:
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(resolve("minilm")), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        done += len(model.encode(texts, batch_size=32))
    return done / (time.perf_counter() - start)


def drive(url: str, tokenizer, texts: list[str], clients: int, per_request: int, duration: float) -> dict:
    """Closed loop: `clients` workers, each request `per_request` texts; sentences/s and latency in ms."""
    engine = http_engine(url, "openai", tokenizer, model=SERVED_NAME)
    pool = -(-len(texts) // per_request)  # every text of the corpus, as offline embeds them
    workload = corpus_workload(tokenizer, per_request, SEQ, pool=pool, corpus=texts)
    m = measure(engine.run, workload, concurrency=clients, duration_s=duration, warmup=2)
    latency = latency_summary(m.latencies_ns) if m.calls else {"p50": float("nan"), "p99": float("nan")}
    return {"rate": m.calls * per_request / m.duration_s, "p50": latency["p50"], "p99": latency["p99"],
            "errors": m.errors, "first_error": m.first_error}


class Process:
    """A server subprocess, ready once GET `ready_path` answers 200."""

    def __init__(self, command: list[str], url: str, ready_path: str, log: Path, env: dict | None = None) -> None:
        self.url, self.log = url, log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                          env={**os.environ, **(env or {})}, cwd=ROOT)
        deadline = time.monotonic() + 600
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {self.popen.returncode}; see {log}")
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command[0]} did not become ready in 10 minutes; see {log}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(60)
        except subprocess.TimeoutExpired:
            self.popen.kill()


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ours(artifact: Path, work: Path, clients: list[int], per_request: list[int], replicas: int | None) -> Process:
    port = free_port()
    command = [sys.executable, "-m", "neuron_encoder", "serve", "--artifact", str(artifact), "--port", str(port),
               "--max-concurrent-requests", str(max(512, max(clients) * max(per_request))),
               "--max-client-batch-size", str(max(32, max(per_request)))]
    if replicas:
        command += ["--replicas", str(replicas)]
    return Process(command, f"http://127.0.0.1:{port}", "/ping", work / "ours.log", {"PYTHONPATH": str(ROOT)})


def infinity_venv(directory: Path) -> Path:
    """Infinity's own virtual environment (created once); torch comes from this interpreter's."""
    python = directory / "bin" / "python"
    if not (directory / "bin" / "infinity_emb").exists():
        subprocess.run([sys._base_executable, "-m", "venv", str(directory)], check=True)
        site = next(directory.glob("lib/python*/site-packages"))
        (site / "zz-reuse-torch.pth").write_text(str(Path(torch.__file__).resolve().parents[1]) + "\n")
        print(f"installing {INFINITY} into {directory} (torch reused from {torch.__file__})", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", INFINITY], check=True)
    return directory / "bin" / "infinity_emb"


def start_infinity(venv: Path, work: Path) -> Process:
    port = free_port()
    command = [str(infinity_venv(venv)), "v2", "--model-id", str(resolve("minilm")), "--served-model-name",
               SERVED_NAME, "--engine", "torch", "--device", "cpu", "--port", str(port), "--no-bettertransformer",
               "--url-prefix", "/v1"]
    env = {"DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HUB_OFFLINE": "1"}
    return Process(command, f"http://127.0.0.1:{port}/v1", "/models", work / "infinity.log", env)


def load_corpora(path: str | None) -> dict[str, list[str]]:
    corpora = {"built-in": list(CORPUS)}
    if path:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        corpora[Path(path).name] = lines
    return corpora


def measure_all(args, artifact: Path, work: Path) -> tuple[dict, list[dict]]:
    """Every system on every corpus; offline results by corpus, and the rows of the load table."""
    corpora = load_corpora(args.corpus)
    clients = [int(c) for c in args.clients.split(",")]
    per_request = [int(p) for p in args.per_request.split(",")]
    model = load_compiled(artifact)
    offline_results = {}
    for name, texts in corpora.items():
        rates, single_p50 = offline(model, texts, sorted({b for b, _ in model.shapes.buckets}), args.duration)
        offline_results[name] = {"rates": rates, "single_p50": single_p50,
                                 "st": sentence_transformers(texts, args.duration)}
        print(f"offline {name}: {', '.join(f'b{b} {r:.1f}/s' for b, r in rates.items())}; batch-1 p50 "
              f"{single_p50:.2f} ms; sentence-transformers {offline_results[name]['st']:.1f}/s", flush=True)
    tokenizer = model.tokenizer
    rows = []
    systems = [("ours", lambda: start_ours(artifact, work, clients, per_request, args.replicas))]
    if not args.no_infinity:
        systems.append(("infinity", lambda: start_infinity(Path(args.infinity_venv), work)))
    for system, start in systems:
        try:
            server = start()
        except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
            print(f"{system} skipped: {error}", flush=True)
            continue
        try:
            for name, texts in corpora.items():
                if system == "ours":
                    paired = offline_results[name]["paired"] = paired_single(model, server.url, texts, args.duration)
                    print(f"ours {name}, one client beside offline: served p50 {paired['served']:.2f} ms, offline "
                          f"{paired['offline']:.2f} ms, added {paired['added']:.2f} ms (median per text)", flush=True)
                for per in per_request:
                    for count in clients:
                        result = drive(server.url, tokenizer, texts, count, per, args.duration)
                        rows.append({"system": system, "corpus": name, "clients": count, "per_request": per,
                                     **result})
                        print(f"{system} {name} c{count} x{per}: {result['rate']:.1f} sentences/s, p50 "
                              f"{result['p50']:.2f} ms, errors {result['errors']}", flush=True)
        finally:
            server.stop()
    model.close()
    return offline_results, rows


def report(offline_results: dict, rows: list[dict]) -> None:
    print(f"\nCPU: {hardware.cpu_model()} ({os.cpu_count()} cores); load average now "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'corpus':<14} {'system':<24} {'clients':>7} {'per req':>7} {'sent/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'errors':>6} {'vs offline':>10} {'vs infinity':>11}")
    for name, result in offline_results.items():
        best_batch = max(result["rates"], key=result["rates"].get)
        best = result["rates"][best_batch]
        for batch, rate in result["rates"].items():
            print(f"{name:<14} {'offline b' + str(batch):<24} {'':>7} {batch:>7} {rate:>9.1f} "
                  f"{result['single_p50'] if batch == 1 else float('nan'):>8.2f} {'':>8} {'':>6} {rate / best:>10.2f}")
        print(f"{name:<14} {'sentence-transformers':<24} {'':>7} {32:>7} {result['st']:>9.1f} {'':>8} {'':>8} "
              f"{'':>6} {result['st'] / best:>10.2f}")
        for row in (r for r in rows if r["corpus"] == name):
            infinity = next((r["rate"] for r in rows if r["system"] == "infinity" and r["corpus"] == name
                             and r["clients"] == row["clients"] and r["per_request"] == row["per_request"]), None)
            versus = f"{row['rate'] / infinity:>11.2f}" if infinity and row["system"] == "ours" else f"{'':>11}"
            print(f"{name:<14} {row['system']:<24} {row['clients']:>7} {row['per_request']:>7} {row['rate']:>9.1f} "
                  f"{row['p50']:>8.2f} {row['p99']:>8.2f} {row['errors']:>6} {row['rate'] / best:>10.2f}{versus}")
        targets(name, result, best, best_batch, rows)


def targets(name: str, result: dict, best: float, best_batch: int, rows: list[dict]) -> None:
    def find(system: str, clients: int) -> dict | None:
        return next((r for r in rows if r["system"] == system and r["corpus"] == name and r["clients"] == clients
                     and r["per_request"] == 1), None)
    ours32, infinity32 = find("ours", 32), find("infinity", 32)
    verdict = lambda ok: "met" if ok else "MISSED"
    if ours32:
        ratio = ours32["rate"] / best
        print(f"  {name}: 32 clients / offline best (b{best_batch}) = {ratio:.2f}x (target >= 0.8): "
              f"{verdict(ratio >= 0.8)}")
    if ours32 and infinity32:
        ratio = ours32["rate"] / infinity32["rate"]
        print(f"  {name}: 32 clients / Infinity = {ratio:.2f}x (target >= 3): {verdict(ratio >= 3)}")
    elif ours32:
        print(f"  {name}: Infinity not measured: no ratio")
    paired = result.get("paired")
    if paired:
        print(f"  {name}: at 1 client, each text served and embedded offline in turn: p50 {paired['served']:.2f} ms "
              f"against {paired['offline']:.2f} ms, {paired['added']:.2f} ms added (median per text; target <= 2): "
              f"{verdict(paired['added'] <= 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", help="a text file, one text per line, measured beside the built-in corpus")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per configuration")
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--per-request", default="1,32")
    parser.add_argument("--replicas", type=int, help="passed to serve --replicas (default: serve's own)")
    parser.add_argument("--no-infinity", action="store_true")
    parser.add_argument("--infinity-venv", default=str(Path.home() / ".cache" / "neuron-encoder" / "infinity-venv"))
    parser.add_argument("--artifacts-dir", default=str(ROOT / "artifacts"), help="the compile cache")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    print(f"CPU: {hardware.cpu_model()}; logs in {work}", flush=True)
    artifact = compile_model("minilm", batch_sizes=DEFAULT_BATCH_SIZES, seq_lens=DEFAULT_SEQ_LENS,
                             artifacts_dir=args.artifacts_dir, progress=print).path
    report(*measure_all(args, artifact, work))


if __name__ == "__main__":
    run_main(main)
