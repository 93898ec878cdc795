"""The queue room of the server: admitted inputs wait here, and each replica, whenever it is free,
packs what is waiting into one compiled (batch, seq) bucket and runs it on its own thread.

The packing rule (text-embeddings-inference's queue.rs, for padded static-shape buckets):
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
No delay timer by default: an idle replica runs whatever is waiting at once (continuous batching),
so a lone request is computed alone; --max-batch-delay-ms trades latency for fuller batches.

Admission is counted in inputs: --max-concurrent-requests inputs may be waiting or computing; one
more is a 429 at once. A request none of whose inputs has started after --request-timeout-ms fails
with 503 and is never computed; one whose computation has begun is finished. A batch the model
raises on fails its requests (424) and nothing else.

Threads: submit, expiry and delivery run on the event loop; packing and the model call run on the
replica threads (threads.ModelThread); the lock guards only the waiting queues.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from neuron_encoder.errors import ConfigError
from neuron_encoder.serve import errors
from neuron_encoder.serve.metrics import Metrics

log = logging.getLogger(__name__)

RunBatch = Callable[[Any, Sequence[list[int]], int], np.ndarray]  # (replica, id rows, seq) -> (N, H)


@dataclass(frozen=True)
class BucketTable:
    """The compiled buckets as the packer sees them, within the batch limits."""

    seq_lens: tuple[int, ...]  # ascending
    batch_sizes: dict[int, tuple[int, ...]]  # per sequence length, ascending, within --max-batch-tokens
    max_rows: int  # --max-batch-requests, or the largest batch size
    costs: dict[tuple[int, int], float]  # what one call of each bucket costs (ms at warm-up, or batch x seq)
    fixed_shapes: bool = True  # False (the CPU): a batch runs at its own (rows, longest), not the bucket's

    @classmethod
    def build(cls, buckets: Iterable[tuple[int, int]], max_batch_tokens: int,
              max_batch_requests: int | None = None,
              costs: dict[tuple[int, int], float] | None = None, fixed_shapes: bool = True) -> BucketTable:
        buckets = sorted(set(buckets))
        seqs = sorted({seq for _, seq in buckets})
        sizes = {}
        for seq in seqs:
            every = sorted(batch for batch, s in buckets if s == seq)
            within = tuple(batch for batch in every if batch * seq <= max_batch_tokens)
            if not within:
                raise ConfigError(f"--max-batch-tokens {max_batch_tokens} is less than the smallest bucket of "
                                  f"length {seq} ({every[0]} x {seq} = {every[0] * seq} tokens): raise it")
            sizes[seq] = within
        largest = max(size[-1] for size in sizes.values())
        costs = monotone(costs or {(batch, seq): float(batch * seq) for batch, seq in buckets})
        return cls(tuple(seqs), sizes, min(max_batch_requests or largest, largest), costs, fixed_shapes)

    def cost(self, batch: int, seq: int, rows: int, longest: int) -> float:
        """What running `rows` inputs (the longest `longest` tokens) in bucket (batch, seq) costs: the
        bucket's own cost where shapes are fixed. Where they are not, the batch runs at (rows, longest)
        whatever bucket it is filed under: the cost of the smallest bucket that holds that shape, scaled
        to the tokens it computes, so a part-filled batch is not charged for empty rows."""
        if self.fixed_shapes:
            return self.costs[(batch, seq)]
        fit_seq = self.seq_for(longest)
        sizes = self.batch_sizes[fit_seq]
        fit_batch = sizes[min(bisect.bisect_left(sizes, rows), len(sizes) - 1)]
        if fit_batch < rows:  # the token budget allows fewer rows at that length: use the candidate's own
            fit_batch, fit_seq = batch, seq
        return self.costs[(fit_batch, fit_seq)] * rows * longest / (fit_batch * fit_seq)

    def computed_tokens(self, batch: int, seq: int, rows: int, longest: int) -> int:
        """Tokens a batch computes, padding included: the bucket's, or (rows, longest) where shapes are free."""
        return batch * seq if self.fixed_shapes else rows * longest

    @property
    def max_length(self) -> int:
        return self.seq_lens[-1]

    def seq_for(self, length: int) -> int:
        """The shortest bucket length that holds `length` tokens (callers check max_length first)."""
        return self.seq_lens[bisect.bisect_left(self.seq_lens, length)]


class Pending:
    """One request's inputs on their way through the queue, and its future on the event loop."""

    __slots__ = ("future", "count", "items", "remaining", "vectors", "enqueued_ns", "first_start_ns",
                 "last_end_ns", "timer", "finished", "begun")

    def __init__(self, future: asyncio.Future, count: int) -> None:
        self.future, self.count, self.remaining = future, count, count
        self.items: list[Item] = []
        self.vectors: np.ndarray | None = None
        self.enqueued_ns = time.perf_counter_ns()
        self.first_start_ns = self.last_end_ns = 0
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False
        self.begun = False  # a replica has taken one of its inputs

    @property
    def queue_s(self) -> float:
        return max(0, self.first_start_ns - self.enqueued_ns) / 1e9

    @property
    def inference_s(self) -> float:
        return max(0, self.last_end_ns - self.first_start_ns) / 1e9


class Item:
    """One input: its token ids, its length class and its place in the arrival order."""

    __slots__ = ("request", "index", "ids", "length", "seq", "order", "started")

    def __init__(self, request: Pending, index: int, ids: list[int], seq: int, order: int) -> None:
        self.request, self.index, self.ids, self.length = request, index, ids, len(ids)
        self.seq, self.order, self.started = seq, order, False


@dataclass
class Plan:
    items: list[Item]
    batch: int
    seq: int
    capacity: int  # the most inputs a batch of this length could have held


def pack(queues: dict[int, deque[Item]], table: BucketTable) -> Plan | None:
    """The next batch from the waiting inputs (the rule in the module docstring); None if none wait.

    Each queue holds one length class in arrival order, and a plan takes a prefix of each, so the
    caller removes a plan's items with popleft.
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
            score = (tokens[rows - 1] / table.cost(batch, seq, rows, longest[rows - 1]), rows, -seq)
            if best_score is None or score > best_score:
                best, best_score = Plan(chosen[:rows], batch, seq, capacity), score
            if rows == len(chosen) or rows == table.max_rows:
                break  # a larger batch would only add filler rows
    return best


def monotone(costs: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    """Costs where no bucket is cheaper than one it contains (fewer rows, shorter): timing noise on a
    busy host must not make a larger bucket look like a bargain."""
    return {(batch, seq): max(cost for (b, s), cost in costs.items() if b <= batch and s <= seq)
            for (batch, seq) in costs}


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


class Batcher:
    """The bounded queue and the replica loops that drain it (see the module docstring)."""

    def __init__(self, table: BucketTable, metrics: Metrics, run: RunBatch, *, max_inputs: int,
                 delay_ms: float = 0.0, timeout_ms: float = 30000.0) -> None:
        self.table, self.metrics, self._run = table, metrics, run
        self.max_inputs, self.delay_ns, self.timeout_s = max_inputs, int(delay_ms * 1e6), timeout_ms / 1000
        self._queues: dict[int, deque[Item]] = {seq: deque() for seq in table.seq_lens}
        self._cond = threading.Condition()
        self._order = itertools.count()
        self._waiting = 0  # inputs in the queues (guarded by the lock)
        self._admitted = 0  # inputs admitted and not answered (event loop only)
        self._replicas = 0
        self._closing = False  # no more admissions (draining)
        self._stopping = False  # replica loops end once the queues are empty
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_batch_failed = False

    @property
    def queue_depth(self) -> int:
        return self._waiting

    @property
    def in_flight(self) -> int:
        return self._admitted

    def start(self, loop: asyncio.AbstractEventLoop, replicas: Sequence[Any]) -> None:
        """Run one replica loop on each replica's ModelThread (threads.ModelThread.submit)."""
        self._loop, self._replicas = loop, len(replicas)
        for index, thread in enumerate(replicas):
            thread.submit(lambda replica, index=index: self._serve(index, replica))

    def close_admission(self) -> None:
        self._closing = True

    def stop(self) -> None:
        """End the replica loops after whatever is still waiting."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the event loop's side

    def submit(self, rows: Sequence[list[int]]) -> Pending:
        """Admit one request's inputs (token id lists, each within the largest bucket) or refuse at once."""
        if self._closing:
            raise errors.Draining("the server is shutting down and admits no new requests")
        if len(rows) > self.max_inputs:
            raise errors.TooManyInputs(f"{len(rows)} inputs can never fit a queue of {self.max_inputs} inputs "
                                       "(--max-concurrent-requests)")
        if self._admitted + len(rows) > self.max_inputs:
            raise errors.Overloaded(f"the queue is full ({self._admitted} of {self.max_inputs} inputs admitted, "
                                    f"--max-concurrent-requests); retry later")
        pending = Pending(self._loop.create_future(), len(rows))
        self._admitted += len(rows)
        with self._cond:
            for index, ids in enumerate(rows):
                item = Item(pending, index, ids, self.table.seq_for(len(ids)), next(self._order))
                pending.items.append(item)
                self._queues[item.seq].append(item)
            self._waiting += len(rows)
            self._cond.notify(min(len(rows), self._replicas))
        pending.timer = self._loop.call_later(self.timeout_s, self._expire, pending)
        return pending

    def withdraw(self, pending: Pending) -> int:
        """Take a request's inputs that have not started out of the queue; how many there were."""
        with self._cond:
            removed = 0
            for item in pending.items:
                if not item.started:
                    self._queues[item.seq].remove(item)
                    item.started = True  # never to be packed, nor removed twice
                    removed += 1
            self._waiting -= removed
        return removed

    def _expire(self, pending: Pending) -> None:
        """The request's timeout: 503 if none of its inputs has started. One that has begun is finished:
        dropping its rest would waste what was computed, and under overload the requests at the head
        of the queue are always the ones about to expire, so goodput would collapse."""
        if pending.finished or pending.begun:
            return
        self.withdraw(pending)
        self._finish(pending, errors.QueueTimeout(
            f"waited more than {self.timeout_s * 1000:g} ms for a replica (--request-timeout-ms); not computed"))

    def _release(self, pending: Pending) -> bool:
        """Give back a request's admission, once; False if it was given back already."""
        if pending.finished:
            return False
        pending.finished = True
        if pending.timer is not None:
            pending.timer.cancel()
        self._admitted -= pending.count
        return True

    def _finish(self, pending: Pending, error: Exception | None = None) -> None:
        if not self._release(pending):
            return
        if error is not None:
            self.withdraw(pending)  # its other inputs need not run
            if not pending.future.done():
                pending.future.set_exception(error)
        elif not pending.future.done():
            pending.future.set_result(pending.vectors)

    def cancel(self, pending: Pending) -> None:
        """The client went away (its handler was cancelled): drop what has not started."""
        if self._release(pending):
            self.withdraw(pending)

    def _deliver(self, replica: int, items: list[Item], bucket: tuple[int, int], vectors: np.ndarray | None,
                 error: Exception | None, start_ns: int, end_ns: int) -> None:
        computed = self.table.computed_tokens(*bucket, len(items), max(item.length for item in items))
        self.metrics.batch_done(replica, len(items), sum(item.length for item in items), bucket, computed,
                                (end_ns - start_ns) / 1e9, error is not None)
        self.last_batch_failed = error is not None
        if error is not None:
            log.error("replica %d: the model failed on a batch of %d input(s) in bucket %s: %s: %s",
                      replica, len(items), bucket, type(error).__name__, error)
        for row, item in enumerate(items):
            pending = item.request
            if pending.finished:
                continue
            if error is not None:
                self._finish(pending, errors.BackendFailed(
                    f"the model failed on the batch holding this request ({type(error).__name__}: {error}); "
                    "the server goes on with the next batch"))
                continue
            if pending.vectors is None:
                pending.vectors = np.empty((pending.count, vectors.shape[1]), dtype=np.float32)
                pending.first_start_ns = start_ns
            pending.vectors[item.index] = vectors[row]
            pending.first_start_ns = min(pending.first_start_ns, start_ns)
            pending.last_end_ns = max(pending.last_end_ns, end_ns)
            pending.remaining -= 1
            if pending.remaining == 0:
                self._finish(pending)

    # ------------------------------------------------------------------ the replica threads' side

    def _serve(self, index: int, replica: Any) -> None:
        """One replica's loop, on its own thread: take a batch, run it, hand the vectors to the loop."""
        activity = self.metrics.activity
        while True:
            with self._cond:
                taken = self._next_batch()
            if taken is None:
                return
            plan = taken
            activity.begin(index)
            start = time.perf_counter_ns()
            try:
                vectors, error = self._run(replica, [item.ids for item in plan.items], plan.seq), None
            except Exception as exc:  # this batch fails; the loop goes on
                vectors, error = None, exc
            end = time.perf_counter_ns()
            activity.end(index)
            try:
                self._loop.call_soon_threadsafe(self._deliver, index, plan.items, (plan.batch, plan.seq),
                                                vectors, error, start, end)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                return

    def _next_batch(self) -> Plan | None:
        """Wait for inputs, pack them, take them out of the queues (the lock is held)."""
        while True:
            if self._waiting == 0:
                if self._stopping:
                    return None
                self._cond.wait()
                continue
            plan = pack(self._queues, self.table)
            if self.delay_ns and len(plan.items) < plan.capacity and not self._stopping:
                waited = time.perf_counter_ns() - min(item.request.enqueued_ns for item in plan.items)
                if waited < self.delay_ns:
                    self._cond.wait((self.delay_ns - waited) / 1e9)
                    continue
            for item in plan.items:
                popped = self._queues[item.seq].popleft()
                assert popped is item, "a plan takes a prefix of each queue"
                item.started = item.request.begun = True
            self._waiting -= len(plan.items)
            if self._waiting:
                self._cond.notify()  # another idle replica can take the rest
            return plan
