"""The main job the README opens with: on the embedded default model, show what the model is, compile
it for the best backend here, check its numerics, benchmark it against CPU eager, and write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from . import hardware
from .embeddings import cosine_matrix, embed_texts
from .errors import ConfigError
from .files import utc_stamp
from .models import load_model
from .params import breakdown, format_table
from .weights import DEFAULT_MODEL

SEQ_BUCKETS = "32,64,128,256"  # the default grid up to 256: the built-in corpus's longest text has ~190 tokens
SAMPLE_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar on stage.",
    "The new movie is awesome.",
    "The stock market fell sharply on Monday.",
]


def best_engines() -> tuple[list[str], str]:
    """What to race on this host and why: CPU eager against the auto backend's family (compiled and
    numerics-gated engines; on the CPU both precisions where bf16 is native, and ONNX Runtime and
    OpenVINO where installed, so the summary names the CPU's fastest engine)."""
    from .bench.engines import GROUPS, PEERS
    from .bench.peers import missing
    backend, reason = hardware.auto_backend()
    installed = [group for group, runtime in zip(GROUPS, PEERS) if not missing(runtime)]
    return ["cpu-eager", *installed, backend] if backend != "cpu" else ["cpu"], reason


def run_quickstart(model: str = DEFAULT_MODEL, run_dir: str | Path | None = None, duration_s: float = 2.0,
                   batch_sizes: str = "1,8", seq_len: int = 128, bench: bool = True, corpus_sentences: int = 512,
                   echo: Callable[[str], None] = print) -> dict:
    """Parameters and sample similarities, then (bench=True) compile + numerics + benchmark + report.

    Everything goes under `run_dir` (default runs/quickstart-<UTC time>); artifacts go to the shared
    ./artifacts cache, so a second run reuses them.
    """
    resolved = load_model(model)
    if resolved.task.kind != "embedding":
        raise ConfigError(f"{resolved.model_id} is a {resolved.task.kind}; quickstart is the embeddings job: use "
                          f"neuron-encoder compile, bench and {'rerank' if resolved.task.kind == 'reranker' else 'classify'}")
    encoder, model_id, tokenizer, checkpoint_dir = (resolved.encoder, resolved.model_id, resolved.tokenizer,
                                                    resolved.checkpoint_dir)
    counts = breakdown(encoder.config)
    echo(format_table(model_id, encoder.config, counts))
    similarity = None
    if tokenizer is not None:
        similarity = cosine_matrix(embed_texts(encoder, SAMPLE_SENTENCES, tokenizer))
        echo("\ncosine similarity of sample sentences:")
        for i, text in enumerate(SAMPLE_SENTENCES):
            echo(f"  {' '.join(f'{x:5.2f}' for x in similarity[i].tolist())}  {text}")
    outcome: dict = {"params": counts, "similarity": None if similarity is None else similarity.tolist()}
    if not bench:
        return outcome

    from .bench.api import run_bench
    from .bench.report import format_cpu_best, format_summary_table, write_report
    from .compiler import compile_model
    run_dir = Path(run_dir or Path("runs") / f"quickstart-{utc_stamp()}")
    engines, why = best_engines()
    echo(f"\ncompiling for the best backend here ({why}), sequence buckets {SEQ_BUCKETS}")
    auto = compile_model(resolved, batch_sizes=batch_sizes, seq_lens=SEQ_BUCKETS, progress=echo)
    echo(f"\nbenchmarking {', '.join(engines)} with that artifact; every compile checks its numerics first")
    result, result_path = run_bench(resolved, engines=engines, batch_sizes=batch_sizes, seq_lens=[seq_len],
                                    concurrency=(1, 2), duration_s=duration_s, out_dir=run_dir,
                                    artifacts=[auto.path], command=f"neuron-encoder quickstart --model {model}",
                                    progress=echo)
    report_path = write_report([result_path], run_dir / "report")
    echo("\n" + format_summary_table(result.rows))
    echo(format_cpu_best(result.rows))
    outcome.update(result=result, result_path=result_path, report_path=report_path, artifact=auto.path)
    if tokenizer is not None:
        outcome["corpus"] = corpus_summary(auto.path, checkpoint_dir, echo, corpus_sentences)
    echo(f"\nreport: {report_path}\nresults: {result_path} (and .csv)")
    return outcome


def corpus_summary(artifact_dir: Path, checkpoint_dir: Path, echo: Callable[[str], None], sentences: int = 512,
                   theirs_batch: int = 32) -> dict:
    """Sentences/s of the artifact on the built-in corpus, raced against sentence-transformers' encode
    (its default batch of 32) on the same sentences. The artifact takes length-sorted batches of its
    largest compiled batch size: a larger batch would be split into those anyway, padded to the
    larger batch's longest text."""
    from .bench.corpus import (bucket_padding, corpus_texts, length_sorted_batches, model_pass, padding_efficiency,
                               race, sentence_transformers_pass)
    from .runtime import load_compiled
    texts = corpus_texts(sentences)
    with load_compiled(artifact_dir) as model:
        batch_size = max(batch for batch, _ in model.shapes.buckets)
        batches = length_sorted_batches(model.tokenizer, texts, batch_size)
        passes = {"artifact": model_pass(model, batches)}
        theirs = sentence_transformers_pass(checkpoint_dir, texts, theirs_batch)
        if theirs is not None:
            passes["sentence-transformers"] = theirs
        speed = race(passes, len(texts))
        efficiency = padding_efficiency(batches, bucket_padding(model))
        precision = model.manifest["precision"]
    echo(f"\non {len(texts)} sentences of the built-in corpus, batches of {batch_size} (the artifact's largest) "
         f"sorted by length: this artifact ({precision}) {speed['artifact']:.1f} sentences/s, padding efficiency "
         f"{efficiency:.0%}")
    if theirs is None:
        echo("  (sentence-transformers is not installed: pip install sentence-transformers to compare)")
    else:
        echo(f"  sentence-transformers encode (batch {theirs_batch}) {speed['sentence-transformers']:.1f} "
             f"sentences/s: this artifact is {speed['artifact'] / speed['sentence-transformers']:.2f}x")
    return {"sentences": len(texts), "artifact_sentences_per_s": speed["artifact"], "padding_efficiency": efficiency,
            "sentence_transformers_sentences_per_s": speed.get("sentence-transformers")}
