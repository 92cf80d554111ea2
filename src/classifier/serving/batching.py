"""Micro-batching: coalesce concurrent predict requests into one model call.

Batches form on a thread, not on the event loop. A request's rows are put straight into a
thread-safe queue by whoever made them (the decode thread, for an image), and one batcher thread
takes the first queued request, gathers more until the batch holds `max_batch_size` images or
`max_wait` has passed (with `max_wait` = 0 it takes only what is already queued, so a lone
request never waits), calls the model, and hands every answer of the batch back to the event
loop in one wake-up. While one batch runs, new requests queue up and form the next: under load
batches grow by themselves. The event loop's part is one submit and one wake-up per request,
because it is the serial stage of the service (docs/serving.md, "The event loop is the serial
stage"). Whether batching pays off is measured side by side with it off (docs/serving.md,
"Micro-batching: the decision").

The queue is bounded (`max_queue`, the admission limit: every queued request holds a slot, so
it never fills in practice; the bound makes that explicit), and a request whose caller gave up
(its deadline passed, the client went away) is dropped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import numpy as np
import numpy.typing as npt

from classifier.serving.errors import Overloaded
from classifier.serving.observability import Metrics
from classifier.serving.runtime import LiteRTModel

Rows = npt.NDArray[np.float32]


@dataclass
class _Pending:
    rows: Rows
    future: asyncio.Future[Rows] = field(repr=False)


_STOP: Final = object()  # put by stop(): the batcher thread ends once what is ahead is done


def _answer(batch: list[_Pending], probabilities: Rows) -> None:
    """On the event loop: each request gets its own rows' answers (unless it gave up)."""
    offset = 0
    for pending in batch:
        n = pending.rows.shape[0]
        if not pending.future.done():
            pending.future.set_result(probabilities[offset : offset + n])
        offset += n


def _fail(futures: list[asyncio.Future[Rows]], exc: BaseException) -> None:
    """On the event loop: hand one failure to every request that still waits."""
    for future in futures:
        if not future.done():
            future.set_exception(exc)


class Predictor:
    """What the request path calls. Batching on (`max_batch_size` > 1): `submit` from any
    thread, or `await predict(rows)` on the loop. Off: `predict_blocking` on a worker thread."""

    def __init__(
        self,
        model: LiteRTModel,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int = 0,
    ) -> None:
        self.model = model
        self.max_queue = max_queue  # 0 = unbounded
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.Queue[_Pending | object] | None = None
        self._thread: threading.Thread | None = None
        # A request that did not fit the previous batch; it starts the next one.
        self._carry: _Pending | object | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def start(self) -> None:
        """Start the batcher thread; called on the event loop that will await the answers."""
        if self.batching and self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._queue = queue.Queue(maxsize=self.max_queue)
            self._carry = None
            self._thread = threading.Thread(target=self._serve, name="micro-batcher", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        """Stop the batcher thread after what is queued has been answered (called once
        in-flight requests are done)."""
        if self._thread is None or self._queue is None or self._loop is None:
            return
        thread, requests = self._thread, self._queue
        # Blocking puts and the join run off the loop: the loop must stay free to take the
        # last answers the thread hands back.
        await self._loop.run_in_executor(None, requests.put, _STOP)
        await self._loop.run_in_executor(None, thread.join)
        self._thread = None
        self._queue = None

    def submit(self, rows: Rows, future: asyncio.Future[Rows]) -> None:
        """Queue `rows`; the batcher sets `future` (a future of the loop given to `start`).
        Safe from any thread. Raises Overloaded when the queue is full."""
        if self._queue is None:
            raise RuntimeError("Predictor.submit before start(), or with batching off")
        try:
            self._queue.put_nowait(_Pending(rows, future))
        except queue.Full:
            raise Overloaded(
                f"the inference queue is full ({self.max_queue} requests); retry shortly",
                headers={"Retry-After": "1"},
            ) from None

    def fail(self, future: asyncio.Future[Rows], exc: BaseException) -> None:
        """From a worker thread: the request failed before it reached the queue."""
        if self._loop is None:
            raise RuntimeError("Predictor.fail before start()")
        self._loop.call_soon_threadsafe(_fail, [future], exc)

    async def predict(self, rows: Rows) -> Rows:
        """P(defective) per row, batched with other requests when batching is on."""
        if self._queue is None:
            return await asyncio.get_running_loop().run_in_executor(None, self._call_model, [rows])
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self.submit(rows, future)
        return await future

    def predict_blocking(self, make_rows: Callable[[], Rows]) -> Rows:
        """Batching off: build the rows and call the model in the calling (worker) thread."""
        return self._call_model([make_rows()])

    def _call_model(self, parts: list[Rows]) -> Rows:
        started = time.perf_counter()
        probabilities = self.model.predict_sync(*parts)
        self.metrics.inference_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(sum(part.shape[0] for part in parts))
        return probabilities

    def _next(self, timeout: float | None) -> _Pending | object | None:
        """The next queued item, the carried one first; None when `timeout` passes first."""
        assert self._queue is not None  # noqa: S101
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        try:
            return self._queue.get(timeout=timeout)  # 0: only what is queued already
        except queue.Empty:
            return None

    def _gather(self, first: _Pending) -> list[_Pending]:
        batch, size = [first], first.rows.shape[0]
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch_size:
            nxt = self._next(max(0.0, deadline - time.monotonic()))
            if nxt is None:
                break
            if not isinstance(nxt, _Pending) or size + nxt.rows.shape[0] > self.max_batch_size:
                # Keep request order: this one starts the next batch (or stops the thread).
                self._carry = nxt
                break
            if not nxt.future.done():  # done = cancelled: its caller gave up while it waited
                batch.append(nxt)
                size += nxt.rows.shape[0]
        return batch

    def _serve(self) -> None:
        """The batcher thread: gather, call the model, hand the answers to the loop."""
        assert self._loop is not None  # noqa: S101
        loop = self._loop
        while True:
            first = self._next(None)
            if not isinstance(first, _Pending):
                return  # _STOP: everything queued before it has been answered
            if first.future.done():  # cancelled while queued: no model call for it
                continue
            gathered = self._gather(first)
            # Requests cancelled while the batch waited for company get no model call either.
            batch = [p for p in gathered if not p.future.done()]
            if not batch:
                continue
            try:
                probabilities = self._call_model([p.rows for p in batch])
            except Exception as exc:  # every request of the batch gets the failure
                answer: Callable[[], object] = partial(_fail, [p.future for p in batch], exc)
            else:
                answer = partial(_answer, batch, probabilities)
            try:
                loop.call_soon_threadsafe(answer)
            except RuntimeError:  # the loop closed without stop(): nobody is waiting
                return
