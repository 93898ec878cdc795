"""The queue room of the server: admitted inputs wait here, and each replica, whenever it is free,
packs what is waiting into one compiled (batch, seq) bucket and runs it on its own thread.

Which inputs go in the next batch, and in which bucket, is packing.py's rule; the queue here feeds it.

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
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np

from neuron_encoder.serve import errors
from neuron_encoder.serve.metrics import Metrics
from neuron_encoder.serve.packing import BucketTable, Item, Packed, pack

log = logging.getLogger(__name__)

RunBatch = Callable[[Any, Sequence[list[int]]], np.ndarray]  # (replica, id rows) -> (N, H); the artifact plans


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
        computed = self.table.shapes.computed_tokens(bucket, len(items), max(item.length for item in items))
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
                packed = self._next_batch()
            if packed is None:
                return
            activity.begin(index)
            start = time.perf_counter_ns()
            try:
                vectors, error = self._run(replica, [item.ids for item in packed.items]), None
            except Exception as exc:  # this batch fails; the loop goes on
                vectors, error = None, exc
            end = time.perf_counter_ns()
            activity.end(index)
            try:
                self._loop.call_soon_threadsafe(self._deliver, index, packed.items, (packed.batch, packed.seq),
                                                vectors, error, start, end)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                return

    def _next_batch(self) -> Packed | None:
        """Wait for inputs, pack them, take them out of the queues (the lock is held)."""
        while True:
            if self._waiting == 0:
                if self._stopping:
                    return None
                self._cond.wait()
                continue
            packed = pack(self._queues, self.table)
            if self.delay_ns and len(packed.items) < packed.capacity and not self._stopping:
                waited = time.perf_counter_ns() - min(item.request.enqueued_ns for item in packed.items)
                if waited < self.delay_ns:
                    self._cond.wait((self.delay_ns - waited) / 1e9)
                    continue
            for item in packed.items:
                popped = self._queues[item.seq].popleft()
                assert popped is item, "a batch takes a prefix of each queue"
                item.started = item.request.begun = True
            self._waiting -= len(packed.items)
            if self._waiting:
                self._cond.notify()  # another idle replica can take the rest
            return packed
