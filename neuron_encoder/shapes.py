"""The shape policy of a compiled artifact: which calls, at which shapes, run a set of inputs, and
what each call costs.

Fixed shapes (Neuron, CUDA's TorchScript): a call runs a compiled bucket's exact (batch, seq), its
inputs padded to it. Free shapes (the CPU, which runs any shape): a call is filed under the bucket
that holds it but runs at its own (rows, longest), since padding would only add work. Either way a
batch larger than the largest bucket is split into chunks. Only this module knows the difference:
the runtime, the server's packer and the benchmark ask it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

Bucket = tuple[int, int]  # (batch, seq)


@dataclass(frozen=True)
class Call:
    """One model call of a plan: rows start .. start + rows of the inputs."""

    start: int
    rows: int
    bucket: Bucket  # the compiled bucket it runs in
    shape: Bucket  # the (batch, seq) it runs at: the bucket's, or (rows, longest) where shapes are free

    @property
    def tokens(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class Plan:
    """How a set of inputs runs: its calls, what they cost, and the tokens they compute."""

    calls: tuple[Call, ...]
    real_tokens: int
    cost: float  # the sum of ShapePolicy.cost over the calls

    @property
    def computed_tokens(self) -> int:
        return sum(call.tokens for call in self.calls)


class ShapePolicy:
    """The compiled buckets, whether they fix the shape, and what a call of each costs: milliseconds
    measured at warm-up (measured()), or batch x seq before that."""

    def __init__(self, buckets: Iterable[Bucket], fixed: bool = True,
                 costs: Mapping[Bucket, float] | None = None) -> None:
        self.buckets = tuple(sorted(set(buckets)))
        self.fixed = fixed
        self.seq_lens = tuple(sorted({seq for _, seq in self.buckets}))
        self.batch_sizes = {seq: tuple(batch for batch, s in self.buckets if s == seq) for seq in self.seq_lens}
        self.costs = monotone(costs or {(batch, seq): float(batch * seq) for batch, seq in self.buckets})
        self._uniform: dict[Bucket, Plan] = {}

    @property
    def max_seq_len(self) -> int:
        return self.seq_lens[-1]

    def measured(self, costs: Mapping[Bucket, float]) -> None:
        """Take each bucket's measured cost (warm-up milliseconds) from now on."""
        self.costs = monotone(costs)
        self._uniform.clear()  # their costs were the old ones

    def seq_for(self, length: int) -> int:
        """The shortest bucket length that holds `length` tokens (callers check max_seq_len first)."""
        return self.seq_lens[bisect.bisect_left(self.seq_lens, length)]

    def chunks(self, batch: int, seq: int) -> tuple[tuple[int, int, int], ...]:
        """((rows, bucket_batch, bucket_seq), ...): the smallest bucket that holds (batch, seq), or
        chunks of the largest batch of that length."""
        bucket_seq = self.seq_for(seq)
        sizes = self.batch_sizes[bucket_seq]
        chunks, remaining = [], batch
        while remaining > 0:
            fit = next((b for b in sizes if b >= remaining), sizes[-1])
            rows = min(remaining, fit)
            chunks.append((rows, fit, bucket_seq))
            remaining -= rows
        return tuple(chunks)

    def plan(self, lengths: Sequence[int]) -> Plan:
        """The calls that run inputs of these token lengths, in order (each within max_seq_len)."""
        calls, start, cost = [], 0, 0.0
        for rows, batch, seq in self.chunks(len(lengths), max(lengths)):
            longest = max(lengths[start:start + rows])
            calls.append(Call(start, rows, (batch, seq), self.shape((batch, seq), rows, longest)))
            cost += self.cost((batch, seq), rows, longest)
            start += rows
        return Plan(tuple(calls), sum(lengths), cost)

    def uniform(self, batch: int, seq: int) -> Plan:
        """The plan of a (batch, seq) block of tensors, every row seq long. Memoised per shape: a
        benchmark's hot path asks the same few shapes again and again."""
        found = self._uniform.get((batch, seq))
        if found is None:
            found = self._uniform[(batch, seq)] = self.plan([seq] * batch)
        return found

    def shape(self, bucket: Bucket, rows: int, longest: int) -> Bucket:
        """The (batch, seq) that `rows` inputs, the longest `longest` tokens, run at in `bucket`."""
        return bucket if self.fixed else (rows, longest)

    def computed_tokens(self, bucket: Bucket, rows: int, longest: int) -> int:
        batch, seq = self.shape(bucket, rows, longest)
        return batch * seq

    def cost(self, bucket: Bucket, rows: int, longest: int) -> float:
        """What running `rows` inputs (the longest `longest` tokens) in `bucket` costs: the bucket's own
        cost where shapes are fixed. Where they are not, the call runs at (rows, longest) whatever
        bucket it is filed under: the cost of the smallest bucket that holds that shape, scaled to the
        tokens it computes, so a part-filled batch is not charged for empty rows."""
        if self.fixed:
            return self.costs[bucket]
        fit_seq = self.seq_for(longest)
        sizes = self.batch_sizes[fit_seq]
        fit = (sizes[min(bisect.bisect_left(sizes, rows), len(sizes) - 1)], fit_seq)
        if fit[0] < rows:  # no bucket of that length holds so many rows: use the candidate's own
            fit = bucket
        return self.costs[fit] * rows * longest / (fit[0] * fit[1])


def monotone(costs: Mapping[Bucket, float]) -> dict[Bucket, float]:
    """Costs where no bucket is cheaper than one it contains (fewer rows, shorter): timing noise on a
    busy host must not make a larger bucket look like a bargain."""
    return {(batch, seq): max(cost for (b, s), cost in costs.items() if b <= batch and s <= seq)
            for (batch, seq) in costs}
