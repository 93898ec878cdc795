"""The packing rule of the server's queue, pure: which waiting inputs go in the next batch, and in
which compiled bucket. No threads, no torch; the artifact's ShapePolicy says what each bucket costs.

The rule (text-embeddings-inference's queue.rs, for padded static-shape buckets):
- the oldest waiting input always goes in the next batch, so nothing starves;
- for each sequence bucket that fits it, the batch is filled first with inputs of that bucket's
  length class, oldest first, then with shorter ones (similar lengths together: less padding);
- a batch holds at most the bucket's batch size, --max-batch-requests inputs, and
  batch x seq <= --max-batch-tokens padded tokens;
- of the candidate (batch, seq) buckets, the one that wastes the least wins: the most real tokens per
  unit of what a call of that bucket costs (on the CPU, which runs a batch at its own shape, that cost
  scaled to the rows and the longest input the batch really has). The server measures each bucket's cost at warm-up, so
  padding, each call's fixed cost and a host's own quirks (a batch too large for its caches) all count;
  without timings the cost is batch x seq, and the rule is the least padding. Ties go to more inputs,
  then to the shorter bucket.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from neuron_encoder.errors import ConfigError
from neuron_encoder.shapes import ShapePolicy



@dataclass(frozen=True)
class BucketTable:
    """The compiled buckets as the packer sees them, within the batch limits; the artifact's shape
    policy prices them."""

    seq_lens: tuple[int, ...]  # ascending
    batch_sizes: dict[int, tuple[int, ...]]  # per sequence length, ascending, within --max-batch-tokens
    max_rows: int  # --max-batch-requests, or the largest batch size
    shapes: ShapePolicy

    @classmethod
    def build(cls, shapes: ShapePolicy, max_batch_tokens: int, max_batch_requests: int | None = None) -> BucketTable:
        sizes = {}
        for seq in shapes.seq_lens:
            every = shapes.batch_sizes[seq]
            within = tuple(batch for batch in every if batch * seq <= max_batch_tokens)
            if not within:
                raise ConfigError(f"--max-batch-tokens {max_batch_tokens} is less than the smallest bucket of "
                                  f"length {seq} ({every[0]} x {seq} = {every[0] * seq} tokens): raise it")
            sizes[seq] = within
        largest = max(size[-1] for size in sizes.values())
        return cls(shapes.seq_lens, sizes, min(max_batch_requests or largest, largest), shapes)

    @property
    def max_length(self) -> int:
        return self.seq_lens[-1]

    def seq_for(self, length: int) -> int:
        """The shortest bucket length that holds `length` tokens (callers check max_length first)."""
        return self.shapes.seq_for(length)


class Item:
    """One input: its token ids, its length class and its place in the arrival order."""

    __slots__ = ("request", "index", "ids", "length", "seq", "order", "started")

    def __init__(self, request: Any, index: int, ids: list[int], seq: int, order: int) -> None:
        self.request, self.index, self.ids, self.length = request, index, ids, len(ids)
        self.seq, self.order, self.started = seq, order, False


@dataclass
class Packed:
    """The next batch: its inputs and the bucket they run in."""

    items: list[Item]
    batch: int
    seq: int
    capacity: int  # the most inputs a batch of this length could have held


def pack(queues: dict[int, deque[Item]], table: BucketTable) -> Packed | None:
    """The next batch from the waiting inputs (the rule in the module docstring); None if none wait.

    Each queue holds one length class in arrival order, and a batch takes a prefix of each, so the
    caller removes its items with popleft.
    """
    heads = [queue[0] for queue in queues.values() if queue]
    if not heads:
        return None
    oldest = min(heads, key=lambda item: item.order)
    best, best_score = None, None
    for seq in table.seq_lens[table.seq_lens.index(oldest.seq):]:
        sizes = table.batch_sizes[seq]
        capacity = min(sizes[-1], table.max_rows)
        chosen = _fill(queues, table, oldest, seq, capacity)
        tokens = list(itertools.accumulate(item.length for item in chosen))
        longest = list(itertools.accumulate((item.length for item in chosen), max))
        for batch in sizes:
            rows = min(len(chosen), batch, table.max_rows)
            score = (tokens[rows - 1] / table.shapes.cost((batch, seq), rows, longest[rows - 1]), rows, -seq)
            if best_score is None or score > best_score:
                best, best_score = Packed(chosen[:rows], batch, seq, capacity), score
            if rows == len(chosen) or rows == table.max_rows:
                break  # a larger batch would only add filler rows
    return best


def _fill(queues: dict[int, deque[Item]], table: BucketTable, oldest: Item, seq: int, capacity: int) -> list[Item]:
    """The oldest input, then its length class's, then shorter classes', each oldest first."""
    chosen = [oldest]
    for length_class in reversed(table.seq_lens[:table.seq_lens.index(seq) + 1]):
        for item in queues[length_class]:
            if len(chosen) == capacity:
                return chosen
            if item is not oldest:
                chosen.append(item)
    return chosen
