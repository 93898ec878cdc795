"""The thread rule, in one place: where a model may run, and how many CPU threads each caller gets.

Why there is a rule: libgomp (torch's OpenMP) gives every thread that starts a parallel region a
team of helper threads of its own, and keeps them. Once a process holds more OpenMP threads than
cores, as when a worker thread starts a second team beside the main thread's, libgomp's idle
helpers stop spinning and sleep, so every parallel region (each layer_norm, add or GELU) pays a
futex wake-up: calls up to 1.5x slower on small hosts (issue 8 measured 14.7 ms in the main thread
against 22.1 ms in a worker, all-MiniLM-L6-v2 on a 2-core Sapphire Rapids).

The rule, followed by the benchmark's workers and the server's replicas:
1. A model runs on the thread that loaded and warmed it up: a single caller is the calling thread
   itself (run_workers with one worker), a replica is a ModelThread that builds its own model.
2. The threads that run CPU models split the intra-op budget (torch's threads when first asked):
   max(1, budget // workers) each. More than that oversubscribes the cores, and ThreadPlan says so.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


_STARTING_THREADS = torch.get_num_threads()  # read on import, before any thread of ours sets its own count


def cpu_budget() -> int:
    """torch's intra-op threads as they were when this module was imported (its cores, or OMP_NUM_THREADS),
    whoever asks first: worker threads change torch's count, so it is never read again. plan_threads
    takes another budget explicitly."""
    return _STARTING_THREADS


@dataclass(frozen=True)
class ThreadPlan:
    """How `workers` model threads share the CPU: intra-op threads each, and whether that is too many."""

    workers: int
    threads_per_worker: int
    oversubscribed: bool  # workers x threads > the budget: on purpose, and said so in results

    def describe(self) -> str:
        text = f"{self.workers} x {self.threads_per_worker} CPU thread{'s' if self.threads_per_worker > 1 else ''}"
        return text + (" (oversubscribed)" if self.oversubscribed else "")


def plan_threads(workers: int, budget: int | None = None) -> ThreadPlan:
    """Split the CPU budget over `workers` callers (rule 2)."""
    budget = budget or cpu_budget()
    each = max(1, budget // workers)
    return ThreadPlan(workers, each, workers * each > budget)


def run_workers(workers: int, body: Callable[[int], None], plan: ThreadPlan | None = None) -> None:
    """body(i) for every i < workers: one worker runs on the calling thread itself (rule 1); more run on
    threads of their own, each with the plan's intra-op threads (rule 2; None leaves torch's setting,
    for models that do not compute on the CPU). Exceptions are raised in the caller, the first first."""
    if workers == 1 and (plan is None or plan.threads_per_worker == torch.get_num_threads()):
        body(0)
        return
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            if plan is not None:
                torch.set_num_threads(plan.threads_per_worker)
            body(i)
        except BaseException as exc:  # surfaced in the caller below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"model-worker-{i}", daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if plan is not None:
        torch.set_num_threads(cpu_budget())  # set_num_threads is partly process-wide: put it back
    if errors:  # a broken barrier is only a symptom: the worker that broke it has the cause
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])


class ModelThread(Generic[T]):
    """One thread that owns a model (rule 1): build() runs on it, then every job submitted.

    The server's replicas are ModelThreads: the event loop never touches torch, and the replica's
    OpenMP team is the only one in the process. `intra_op_threads` applies rule 2 on CPU hosts.
    """

    def __init__(self, build: Callable[[], T], name: str = "model", intra_op_threads: int | None = None) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._ready: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(build, intra_op_threads), name=name, daemon=True)
        self._thread.start()

    def _serve(self, build: Callable[[], T], intra_op_threads: int | None) -> None:
        try:
            if intra_op_threads is not None:
                torch.set_num_threads(intra_op_threads)
            model = build()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(model)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(model))
                except BaseException as exc:  # the caller's future carries it
                    future.set_exception(exc)

    def ready(self, timeout: float | None = None) -> T:
        """Wait until build() is done; its exception if it failed."""
        return self._ready.result(timeout)

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def submit(self, fn: Callable[[T], R]) -> concurrent.futures.Future[R]:
        """Run fn(model) on the model's thread, after the jobs before it."""
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future

    def close(self, timeout: float | None = None) -> None:
        """Finish the jobs already submitted, then stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)
