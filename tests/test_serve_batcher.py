"""The queue and the packing rule, without HTTP or torch: inputs are id lists of known lengths, and a
replica is a ModelThread whose model call records what it was given."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import numpy as np
import pytest

from neuron_encoder.errors import ConfigError
from neuron_encoder.serve import errors
from neuron_encoder.serve.batcher import Batcher, Pending
from neuron_encoder.serve.metrics import Metrics
from neuron_encoder.serve.packing import BucketTable, Item, pack
from neuron_encoder.shapes import ShapePolicy, monotone
from neuron_encoder.threads import ModelThread

BUCKETS = [(b, s) for b in (1, 4, 8) for s in (16, 32, 64)]
PER_CALL = {(b, s): b * s + 16.0 for b, s in BUCKETS}  # padded tokens, and each call's fixed cost


def table_of(buckets, max_batch_tokens: int, max_batch_requests: int | None = None, costs=None,
             fixed: bool = True) -> BucketTable:
    return BucketTable.build(ShapePolicy(buckets, fixed, costs), max_batch_tokens, max_batch_requests)


def queued(table: BucketTable, lengths: list[int]) -> dict[int, deque]:
    """Waiting inputs of these lengths, in this arrival order."""
    queues = {seq: deque() for seq in table.seq_lens}
    request = Pending.__new__(Pending)
    for order, length in enumerate(lengths):
        queues[table.seq_for(length)].append(Item(request, order, [5] * length, table.seq_for(length), order))
    return queues


def lengths_of(plan) -> list[int]:
    return [item.length for item in plan.items]


def test_bucket_table_keeps_the_token_budget_and_the_request_limit():
    table = table_of(BUCKETS, max_batch_tokens=256)
    assert table.batch_sizes == {16: (1, 4, 8), 32: (1, 4, 8), 64: (1, 4)}  # 8 x 64 = 512 > 256
    assert table.max_rows == 8 and table.max_length == 64
    assert table_of(BUCKETS, 4096, max_batch_requests=3).max_rows == 3
    with pytest.raises(ConfigError, match="smallest bucket of length 64 .* raise it"):
        table_of(BUCKETS, max_batch_tokens=32)


def test_where_shapes_are_free_a_part_filled_batch_pays_only_for_its_rows():
    """Five inputs of 60 tokens. Fixed shapes (Neuron, CUDA graphs): a call of (8, 64) costs the same
    with 5 rows as with 8, so (4, 64) exactly full wins. The CPU runs (5, 60) as it is, at 5 x 60 / (8 x 64)
    of the bucket's cost, so all five go at once."""
    fixed = table_of(BUCKETS, 16384, costs=PER_CALL)
    plan = pack(queued(fixed, [60] * 5), fixed)
    assert (plan.batch, plan.seq, len(plan.items)) == (4, 64, 4)
    free = table_of(BUCKETS, 16384, costs=PER_CALL, fixed=False)
    plan = pack(queued(free, [60] * 5), free)
    assert (plan.batch, plan.seq, len(plan.items)) == (8, 64, 5)
    assert free.shapes.computed_tokens((8, 64), rows=5, longest=60) == 300
    assert fixed.shapes.computed_tokens((8, 64), 5, 60) == 512


def test_a_lone_input_runs_alone_in_the_smallest_bucket_that_fits():
    table = table_of(BUCKETS, 16384, costs=PER_CALL)
    plan = pack(queued(table, [20]), table)
    assert (plan.batch, plan.seq, lengths_of(plan)) == (1, 32, [20])
    assert pack(queued(table, []), table) is None


def test_similar_lengths_go_together_and_the_least_padded_bucket_wins():
    table = table_of(BUCKETS, 16384, costs=PER_CALL)
    # The oldest is short; four more short ones and four long ones wait. Short ones fill (4, 16) exactly.
    plan = pack(queued(table, [16, 60, 14, 60, 15, 60, 16, 60]), table)
    assert (plan.batch, plan.seq) == (4, 16) and lengths_of(plan) == [16, 14, 15, 16]
    # A short oldest among long ones rides with them: nothing else short waits, and (8, 64) carries it
    # with seven long inputs at 85% (a call of its own: 10 / (16 + 16) = 31%).
    plan = pack(queued(table, [10, 62, 63, 64, 61, 62, 63, 64]), table)
    assert (plan.batch, plan.seq) == (8, 64) and lengths_of(plan)[0] == 10 and len(plan.items) == 8


def test_the_oldest_input_is_always_in_the_next_batch():
    table = table_of(BUCKETS, 16384)
    queues = queued(table, [60] + [16] * 20)  # a long one first, then many that would pack better
    plan = pack(queues, table)
    assert 60 in lengths_of(plan) and plan.seq == 64
    assert plan.items[0].order == 0


def test_fewer_inputs_than_a_batch_pick_the_batch_size_with_least_filler():
    table = table_of(BUCKETS, 16384, costs=PER_CALL)
    plan = pack(queued(table, [16] * 5), table)
    assert (plan.batch, len(plan.items)) == (4, 4)  # a full (4, 16) beats (8, 16) with 3 filler rows
    exact = table_of(BUCKETS, 16384)  # cost batch x seq: one exact input is as good as four
    plan = pack(queued(exact, [16] * 4), exact)
    assert (plan.batch, len(plan.items)) == (4, 4)  # and ties go to more inputs


def test_measured_costs_steer_the_packer_away_from_a_slow_bucket():
    """On a host where a batch of 8 costs more per row than two batches of 4 (a cache too small), 16
    waiting inputs go four at a time."""
    costs = {(b, s): {1: 1.0, 4: 2.0, 8: 6.0}[b] * s for b, s in BUCKETS}
    table = table_of(BUCKETS, 16384, costs=costs)
    assert (pack(queued(table, [16] * 16), table).batch) == 4
    assert (pack(queued(table_of(BUCKETS, 16384), [16] * 16), table_of(BUCKETS, 16384)).batch) == 8


def test_costs_never_make_a_larger_bucket_cheaper():
    noisy = {(1, 16): 5.0, (4, 16): 3.0, (1, 32): 4.0, (4, 32): 9.0}
    assert monotone(noisy) == {(1, 16): 5.0, (4, 16): 5.0, (1, 32): 5.0, (4, 32): 9.0}


def test_max_batch_requests_caps_the_rows():
    table = table_of([(4, 16)], 16384, max_batch_requests=2)
    plan = pack(queued(table, [16] * 6), table)
    assert len(plan.items) == 2 and plan.batch == 4  # two rows and two filler rows


def test_a_plan_takes_a_prefix_of_each_queue():
    table = table_of(BUCKETS, 16384)
    queues = queued(table, [30, 12, 31, 14, 29, 60])
    plan = pack(queues, table)
    for seq, queue in queues.items():
        taken = [item for item in plan.items if item.seq == seq]
        assert taken == list(queue)[:len(taken)]


# ----------------------------------------------------------------------------- the queue, live

class Recorder:
    """A replica model: records each batch (its rows and seq) and returns row i filled with its length;
    it holds while `gate` is clear and raises on a row starting with 999."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.holding = threading.Event()

    def __call__(self, replica, rows):
        self.holding.set()
        self.gate.wait()
        self.batches.append([len(ids) for ids in rows])
        if any(ids[0] == 999 for ids in rows):
            raise RuntimeError("boom")
        return np.array([[len(ids), replica] for ids in rows], dtype=np.float32)


def run(coroutine):
    return asyncio.run(coroutine)


def make_batcher(replicas: int = 1, **limits) -> tuple[Batcher, Recorder, list[ModelThread]]:
    table = table_of(BUCKETS, 16384, limits.pop("max_batch_requests", None))
    recorder = Recorder()
    batcher = Batcher(table, Metrics(replicas, lambda: 0, lambda: 0), recorder, **{"max_inputs": 64, **limits})
    threads = [ModelThread(lambda i=i: i, name=f"test-replica-{i}") for i in range(replicas)]
    return batcher, recorder, threads


async def started(batcher, threads):
    batcher.start(asyncio.get_running_loop(), threads)


def test_results_come_back_in_order_for_each_request():
    batcher, recorder, threads = make_batcher()

    async def scenario():
        await started(batcher, threads)
        pending = batcher.submit([[1] * 3, [1] * 40, [1] * 7])
        return await pending.future

    vectors = run(scenario())
    assert vectors[:, 0].tolist() == [3, 40, 7]
    batcher.stop()


def test_a_full_queue_refuses_at_once_with_retry_after():
    batcher, recorder, threads = make_batcher(max_inputs=4)

    async def scenario():
        await started(batcher, threads)
        recorder.gate.clear()
        first = batcher.submit([[1] * 3] * 4)
        with pytest.raises(errors.Overloaded) as refused:
            batcher.submit([[1] * 3])
        assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
        assert batcher.in_flight == 4
        with pytest.raises(errors.TooManyInputs, match="can never fit"):
            batcher.submit([[1] * 3] * 5)
        recorder.gate.set()
        await first.future
        assert batcher.in_flight == 0
        batcher.submit([[1] * 3])  # admitted again once the first is answered

    run(scenario())
    batcher.stop()


def test_a_request_whose_computation_has_begun_is_finished_past_the_timeout():
    """Two inputs of one request in different length classes: the first runs (held at the gate) past the
    timeout; the second still waits, and is computed, not dropped with 503."""
    batcher, recorder, threads = make_batcher(timeout_ms=50)

    async def scenario():
        await started(batcher, threads)
        recorder.gate.clear()
        both = batcher.submit([[1] * 3, [1] * 40])
        while not recorder.holding.is_set():
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)  # twice the timeout
        recorder.gate.set()
        vectors = await both.future
        assert vectors.shape[0] == 2 and batcher.in_flight == 0

    run(scenario())
    batcher.stop()
    threads[0].close()
    assert sorted(len(lengths) for lengths in recorder.batches) == [1, 1]  # two batches: both inputs ran


def test_an_input_waiting_past_the_timeout_fails_with_503_and_never_runs():
    batcher, recorder, threads = make_batcher(timeout_ms=50)

    async def scenario():
        await started(batcher, threads)
        recorder.gate.clear()
        held = batcher.submit([[1] * 3])
        while not recorder.holding.is_set():
            await asyncio.sleep(0.001)
        late = batcher.submit([[1] * 5])
        with pytest.raises(errors.QueueTimeout):
            await late.future
        recorder.gate.set()
        await held.future
        assert batcher.queue_depth == 0 and batcher.in_flight == 0

    run(scenario())
    batcher.stop()
    threads[0].close()
    assert recorder.batches == [[3]]  # the late input was never computed


def test_a_failing_batch_fails_its_requests_only():
    batcher, recorder, threads = make_batcher()

    async def scenario():
        await started(batcher, threads)
        bad = batcher.submit([[999, 1, 1]])
        with pytest.raises(errors.BackendFailed, match="boom"):
            await bad.future
        assert batcher.last_batch_failed
        good = await batcher.submit([[1, 1]]).future
        assert good[0, 0] == 2 and not batcher.last_batch_failed

    run(scenario())
    batcher.stop()


def test_every_replica_takes_work_without_waiting_for_the_others():
    batcher, recorder, threads = make_batcher(replicas=2, max_batch_requests=1)

    async def scenario():
        await started(batcher, threads)
        recorder.gate.clear()
        first = batcher.submit([[1] * 3])
        second = batcher.submit([[1] * 3])
        while batcher.queue_depth:  # both taken while the first replica is still held
            await asyncio.sleep(0.001)
        recorder.gate.set()
        return (await first.future)[0, 1], (await second.future)[0, 1]

    assert sorted(run(scenario())) == [0.0, 1.0]
    batcher.stop()


def test_draining_refuses_new_inputs_and_finishes_admitted_ones():
    batcher, recorder, threads = make_batcher()

    async def scenario():
        await started(batcher, threads)
        recorder.gate.clear()
        admitted = batcher.submit([[1] * 3])
        batcher.close_admission()
        with pytest.raises(errors.Draining):
            batcher.submit([[1] * 3])
        recorder.gate.set()
        return await admitted.future

    assert run(scenario())[0, 0] == 3
    batcher.stop()
    threads[0].close(timeout=5)


def test_the_delay_waits_for_a_fuller_batch():
    batcher, recorder, threads = make_batcher(delay_ms=300)

    async def scenario():
        await started(batcher, threads)
        first = batcher.submit([[1] * 3])
        await asyncio.sleep(0.05)
        second = batcher.submit([[1] * 3] * 3)  # arrives while the first waits for company
        await asyncio.gather(first.future, second.future)

    run(scenario())
    batcher.stop()
    assert recorder.batches == [[3, 3, 3, 3]]  # one batch of four, not 1 then 3
