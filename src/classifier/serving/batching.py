"""Micro-batching: coalesce concurrent predict requests into one model call.

A single worker task takes the first queued request, then gathers more until the batch holds
`max_batch_size` images or `max_wait` has passed (with `max_wait` = 0 it takes only what is
already queued, so a lone request never waits). While one batch runs on the interpreter thread,
new requests queue up and form the next batch: under load batches grow by themselves.
Whether this pays off is measured in bench/serving.py and recorded in docs/serving.md.

The queue is bounded (`max_queue`, the admission limit: every queued request holds a slot, so
it never fills in practice; the bound makes that explicit), and a request whose caller gave up
(its deadline passed, the client went away) is dropped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from classifier.serving.errors import Overloaded
from classifier.serving.observability import Metrics
from classifier.serving.runtime import LiteRTModel


@dataclass
class _Pending:
    rows: npt.NDArray[np.float32]
    future: asyncio.Future[npt.NDArray[np.float32]] = field(repr=False)


class Predictor:
    """What routes call: `await predictor.predict(rows)`. Batches when `max_batch_size` > 1."""

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
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        # A request that did not fit the previous batch; it starts the next one.
        self._carry: _Pending | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def start(self) -> None:
        if self.batching and self._worker is None:
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the worker after the queue is drained (called once in-flight requests are done)."""
        if self._worker is None or self._queue is None:
            return
        await self._queue.join()
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._worker = None
        self._queue = None

    async def predict(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self._queue is None:
            return await self._call_model(rows)
        future: asyncio.Future[npt.NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(rows, future))
        except asyncio.QueueFull:
            raise Overloaded(
                f"the inference queue is full ({self.max_queue} requests); retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        return await future

    def predict_blocking(
        self, make_rows: Callable[[], npt.NDArray[np.float32]]
    ) -> npt.NDArray[np.float32]:
        """Batching off: build the rows and call the model in the calling (worker) thread."""
        rows = make_rows()
        started = time.perf_counter()
        probabilities = self.model.predict_sync(rows)
        self.metrics.inference_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(rows.shape[0])
        return probabilities

    async def _call_model(self, *parts: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        started = time.perf_counter()
        probabilities = await self.model.predict(*parts)
        self.metrics.inference_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(sum(part.shape[0] for part in parts))
        return probabilities

    async def _gather(self, first: _Pending) -> list[_Pending]:
        assert self._queue is not None  # noqa: S101
        batch, size = [first], first.rows.shape[0]
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch_size:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if nxt.future.done():  # cancelled: its caller gave up while it waited
                self._queue.task_done()
                continue
            if size + nxt.rows.shape[0] > self.max_batch_size:
                # Keep request order; this one starts the next batch.
                self._carry = nxt
                break
            batch.append(nxt)
            size += nxt.rows.shape[0]
        return batch

    async def _run(self) -> None:
        assert self._queue is not None  # noqa: S101
        while True:
            if self._carry is not None:
                first, self._carry = self._carry, None
            else:
                first = await self._queue.get()
            if first.future.done():  # cancelled while queued: no model call for it
                self._queue.task_done()
                continue
            gathered = await self._gather(first)
            # Requests cancelled while the batch waited for company get no model call either.
            batch = [p for p in gathered if not p.future.done()]
            for _ in range(len(gathered) - len(batch)):
                self._queue.task_done()
            if not batch:
                continue
            try:
                probabilities = await self._call_model(*(p.rows for p in batch))
            except Exception as exc:  # hand the failure to every waiting request
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
            else:
                offset = 0
                for pending in batch:
                    n = pending.rows.shape[0]
                    if not pending.future.done():  # the client may have gone away
                        pending.future.set_result(probabilities[offset : offset + n])
                    offset += n
            finally:
                for _ in batch:
                    self._queue.task_done()
