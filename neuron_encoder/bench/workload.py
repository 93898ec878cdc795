"""Benchmark inputs that look like traffic: real sentences, or token lengths drawn from a distribution.

All-zero or all-full inputs flatter a benchmark: real requests vary in length, so a padded bucket
carries padding, and tokens per second counts only the real tokens. Every workload here is seeded,
so two runs (or two machines) time exactly the same inputs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neuron_encoder.config import EncoderConfig
from neuron_encoder.errors import ConfigError, positive_int
from neuron_encoder.text import Batch, Tokenizer, random_batch

# Search queries, chat turns, product text, support tickets, news and documentation paragraphs:
# from 3 words to ~150, so short buckets truncate some and long buckets pad most.
CORPUS: tuple[str, ...] = (
    "cheap flights to lisbon",
    "how do I reset my password",
    "best running shoes for flat feet",
    "weather tomorrow",
    "what is the capital of Australia?",
    "python list comprehension with condition",
    "Is this jacket waterproof?",
    "Thanks, that fixed it!",
    "Can I return an opened item after 30 days?",
    "symptoms of vitamin D deficiency in adults",
    "The package arrived two days late and the box was damaged, but the contents were fine.",
    "Our quarterly revenue grew by 12 percent, driven mostly by subscriptions in Europe.",
    "Please summarise the attached contract and list any clauses about early termination.",
    "The museum reopens on Saturday with a new exhibition of early photography.",
    "I ordered the blue version but received the green one; how can I exchange it?",
    "A light rain is expected in the morning, clearing by noon with highs around 18 degrees.",
    "Set the learning rate to 3e-4 and warm it up over the first thousand steps.",
    "She finished the marathon in under four hours despite the heat.",
    "The meeting has been moved to Thursday at 3 pm in the large conference room.",
    "Which of these two laptops has the better battery life for travel?",
    "Wireless noise-cancelling headphones with 30-hour battery, fast charging and a foldable design.",
    "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours and hot for 12.",
    "Error 502 when uploading files larger than 10 MB through the web interface since this morning.",
    "The city council approved a plan to add forty kilometres of protected bike lanes by 2027.",
    "Researchers found that the new battery chemistry keeps 90 percent of its capacity after "
    "two thousand charge cycles.",
    "To install the command-line tool, download the archive, unpack it and add the bin folder "
    "to your PATH.",
    "My flight was cancelled and the airline rebooked me on a flight that leaves a day later; "
    "am I entitled to compensation?",
    "The recipe calls for two cups of flour, one teaspoon of baking soda, a pinch of salt and "
    "three ripe bananas.",
    "Customers who bought this camera also bought a spare battery, a 64 GB memory card and a "
    "padded carrying case.",
    "The library will extend its opening hours during the exam period, staying open until "
    "midnight on weekdays.",
    "Attention is a mechanism that lets a model weigh every other token in the sequence when "
    "computing the representation of one token.",
    "I have been a customer for six years and this is the first time I have had a problem, but "
    "nobody has answered my emails for two weeks.",
    "The hotel is a ten-minute walk from the old town, has a rooftop pool and serves breakfast "
    "until eleven, but the rooms facing the street are noisy at night.",
    "When the service starts, it loads the model, warms it up with a few requests and only then "
    "reports itself as ready to the load balancer.",
    "Heavy snow closed the mountain pass overnight, and the authorities advise drivers to carry "
    "chains and to check the road reports before leaving.",
    "Our team is looking for a backend engineer with experience in distributed systems, Python "
    "and cloud infrastructure; remote work is possible within the EU.",
    "The study followed twelve thousand participants for ten years and found a modest but "
    "consistent link between daily walking and lower blood pressure.",
    "After the update, the app crashes whenever I open the settings page on my phone. I have "
    "already tried reinstalling it and restarting the phone, and the problem persists.",
    "Photosynthesis converts light energy into chemical energy: plants take in carbon dioxide "
    "and water and, using sunlight, produce glucose and release oxygen.",
    "The central bank left interest rates unchanged on Wednesday, saying that inflation had "
    "slowed but remained above its target, and signalled that cuts could come later in the year.",
    "To request a refund, sign in to your account, open the order, choose the items you want to "
    "return and select a reason. You will receive a prepaid label by email within one business day.",
    "The novel follows three generations of a family of fishermen on a small island, and the "
    "way the sea shapes their work, their quarrels and their hopes for the children who leave.",
    "Inferentia2 instances pair NeuronCores with high-bandwidth memory; a model is compiled ahead "
    "of time for fixed input shapes, so requests are padded to the nearest compiled bucket.",
    "We measured latency from the moment a request was scheduled, not from when a worker picked "
    "it up, so time spent waiting in the queue is part of every number we report.",
    "The apartment has two bedrooms, a bright living room with a balcony facing the park, a "
    "renovated kitchen and a storage room in the basement; it is available from the first of "
    "next month and pets are allowed.",
    "During the outage, requests to the payment service timed out after thirty seconds, which "
    "caused the checkout page to retry and doubled the load on the database. We have since added "
    "a circuit breaker and lowered the timeout to five seconds.",
    "The orchestra opened with a restrained reading of the overture, let the slow movement "
    "breathe, and finished the symphony with a finale so fast and bright that the audience was "
    "on its feet before the last chord had faded.",
    "Volcanic soils are often very fertile because they are rich in minerals such as potassium "
    "and phosphorus, which is why farms have been built on the slopes of active volcanoes for "
    "thousands of years despite the obvious danger of eruptions.",
    "Dear support team, since Monday our nightly export job has been failing with a permissions "
    "error on the storage bucket, although nobody changed the policy. The job runs under the same "
    "service account as before, and the error message mentions a missing role that we have never "
    "needed. Could you check whether something changed on your side, and tell us how to restore "
    "the previous behaviour? The export feeds our morning reports, so this is urgent for us.",
    "Sentence embeddings map a piece of text to a single vector so that texts with similar "
    "meanings end up close together. They are used for semantic search, clustering, duplicate "
    "detection and as features for classifiers. A common recipe encodes the text with a "
    "transformer, averages the token vectors over the real (unpadded) tokens and normalises the "
    "result, so that the cosine similarity between two vectors is simply their dot product.",
    "Release notes, version 4.2. The scheduler now spreads replicas across availability zones by "
    "default, which removes the single-zone failure mode several users reported; set the zone "
    "spread policy to none to keep the old behaviour. Metrics gained a per-route latency "
    "histogram with buckets from one millisecond to ten seconds, and the dashboard shows the "
    "p50, p95 and p99 of each route. The configuration loader accepts environment variables in "
    "every string field, and it now refuses unknown keys instead of ignoring them, so a typo in "
    "a field name is reported at start-up rather than discovered in production. Upgrading from "
    "4.1 needs no migration, but deployments that pinned the old default zone policy should "
    "review it, and anyone parsing the log output should note that timestamps are now written "
    "in UTC with millisecond precision.",
)


@dataclass(frozen=True)
class Workload:
    """A pool of batches for one (batch size, sequence length) configuration, cycled through by the
    runner. All batches have exactly (batch_size, seq_len): the shape a compiled bucket expects."""

    batch_size: int
    seq_len: int
    batches: tuple[Batch, ...]
    source: str  # where the token ids come from, for the row's label and the reader

    def __post_init__(self) -> None:
        if not self.batches:
            raise ConfigError("a workload needs at least one batch")
        for batch in self.batches:
            if tuple(batch.input_ids.shape) != (self.batch_size, self.seq_len):
                raise ConfigError(f"workload batch has shape {tuple(batch.input_ids.shape)}, "
                                  f"expected ({self.batch_size}, {self.seq_len})")

    @property
    def real_tokens(self) -> tuple[int, ...]:
        """Real (unpadded) tokens in each batch of the pool."""
        return tuple(int(batch.attention_mask.sum()) for batch in self.batches)

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / padded tokens over the pool, 0..1: the share of the compute that is useful."""
        return sum(self.real_tokens) / (len(self.batches) * self.batch_size * self.seq_len)


def _check_shape(batch_size: int, seq_len: int, pool: int) -> None:
    for name, value in (("batch size", batch_size), ("sequence length", seq_len), ("pool", pool)):
        positive_int(name, value)


def corpus_workload(tokenizer: Tokenizer, batch_size: int, seq_len: int, pool: int = 8,
                    seed: int = 0, corpus: Sequence[str] = CORPUS, pairs: bool = False) -> Workload:
    """Texts from `corpus` (the built-in CORPUS, or a user's), in a seeded random order, tokenised and
    padded (or cut) to seq_len; with `pairs`, each text with the next as a (query, text) pair (a reranker's
    input, so a row is a pair)."""
    _check_shape(batch_size, seq_len, pool)
    if not corpus:
        raise ConfigError("the corpus has no texts")
    rng = random.Random(seed * 7919 + batch_size * 131 + seq_len)
    order = list(corpus)
    rng.shuffle(order)
    texts = [order[i % len(order)] for i in range(pool * batch_size)]
    if pairs:
        texts = [(text, order[(i + 1) % len(order)]) for i, text in enumerate(texts)]
    batches = tuple(tokenizer.encode(texts[i * batch_size:(i + 1) * batch_size], pad_to=seq_len)
                    for i in range(pool))
    what = ("English texts" if corpus is CORPUS else "texts of a corpus file") + (", in pairs" if pairs else "")
    return Workload(batch_size, seq_len, batches, source=f"corpus: {len(corpus)} {what}, tokenised")


def draw_lengths(count: int, seq_len: int, generator: torch.Generator, median_fraction: float = 0.4,
                 sigma: float = 0.6) -> torch.Tensor:
    """Token counts from a log-normal with median median_fraction * seq_len, clipped to [2, seq_len].

    Real text lengths are right-skewed: many short requests, a long tail. At least 2 tokens: the
    [CLS] and [SEP] every tokenised text has.
    """
    normal = torch.randn(count, generator=generator, dtype=torch.float64)
    lengths = torch.exp(math.log(median_fraction * seq_len) + sigma * normal).round().long()
    return lengths.clamp(min=min(2, seq_len), max=seq_len)


def synthetic_workload(config: EncoderConfig, batch_size: int, seq_len: int, pool: int = 8,
                       seed: int = 0, median_fraction: float = 0.4, sigma: float = 0.6) -> Workload:
    """Random token ids (never the pad id) with lengths from draw_lengths, for models without a
    tokenizer (random-weight presets)."""
    _check_shape(batch_size, seq_len, pool)
    config.check_sequence_length(seq_len)
    generator = torch.Generator().manual_seed(seed * 7919 + batch_size * 131 + seq_len)
    batches = tuple(random_batch(config, draw_lengths(batch_size, seq_len, generator, median_fraction, sigma),
                                 seq_len, generator) for _ in range(pool))
    return Workload(batch_size, seq_len, batches,
                    source=f"synthetic: log-normal lengths, median {median_fraction:g} x seq, sigma {sigma:g}")


def make_workload(config: EncoderConfig, tokenizer: Tokenizer | None, batch_size: int, seq_len: int,
                  pool: int = 8, seed: int = 0, pairs: bool = False) -> Workload:
    """Real text (pairs of texts with `pairs`) when the model has a tokenizer, the length distribution
    otherwise."""
    if tokenizer is not None:
        return corpus_workload(tokenizer, batch_size, seq_len, pool, seed, pairs=pairs)
    return synthetic_workload(config, batch_size, seq_len, pool, seed)
