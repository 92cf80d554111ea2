"""Micro-batching: concurrent requests share model calls and each gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from classifier.serving.app import create_app
from classifier.serving.batching import Predictor
from classifier.serving.errors import Overloaded
from classifier.serving.observability import Metrics
from classifier.serving.runtime import LiteRTModel

from .conftest import make_settings, png_bytes, wait_ready

T = TypeVar("T")
# A broken batcher loses requests: fail the test rather than hang the suite.
pytestmark = pytest.mark.timeout(60)


def _run(
    tiny_model_dir: Path, max_batch_size: int, max_wait_ms: float
) -> tuple[list[np.ndarray], np.ndarray, Metrics]:
    model = LiteRTModel(tiny_model_dir, threads=1, max_batch=max_batch_size)
    model.load()
    metrics = Metrics()
    rng = np.random.default_rng(1)
    requests = [rng.random((n, 32, 32, 1), dtype=np.float32) for n in (1, 3, 2, 1, 4, 1)]

    async def scenario() -> list[np.ndarray]:
        predictor = Predictor(
            model, metrics, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms
        )
        predictor.start()
        results = await _within(asyncio.gather(*(predictor.predict(r) for r in requests)))
        await predictor.stop()
        return list(results)

    results = asyncio.run(scenario())
    expected = model.predict_sync(np.concatenate(requests))
    model.close()
    return results, expected, metrics


def _calls(metrics: Metrics) -> tuple[float, float]:
    count = metrics.registry.get_sample_value("classifier_inference_batch_size_count") or 0.0
    total = metrics.registry.get_sample_value("classifier_inference_batch_size_sum") or 0.0
    return count, total


def test_batched_results_match_unbatched_and_go_to_the_right_request(tiny_model_dir: Path) -> None:
    results, expected, metrics = _run(tiny_model_dir, max_batch_size=8, max_wait_ms=20)
    assert [r.shape[0] for r in results] == [1, 3, 2, 1, 4, 1]
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-6)
    calls, images = _calls(metrics)
    assert images == 12
    assert calls < 6  # concurrent requests were coalesced, never over 8 images a call
    assert calls >= 2


def test_batch_size_one_calls_the_model_per_request(tiny_model_dir: Path) -> None:
    results, expected, metrics = _run(tiny_model_dir, max_batch_size=1, max_wait_ms=0)
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-6)
    assert _calls(metrics) == (6, 12)


def test_service_with_batching_on_answers_concurrent_requests(tiny_model_dir: Path) -> None:
    settings = make_settings(tiny_model_dir, max_batch_size=8, max_batch_wait_ms=5)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)

        def post(seed: int) -> list[float]:
            files = [
                ("files", (f"{seed}-{i}.png", png_bytes(seed=seed + i), "image/png"))
                for i in range(2)
            ]
            response = client.post("/v1/predict", files=files)
            assert response.status_code == 200, response.text
            return [p["probability"] for p in response.json()["predictions"]]

        with ThreadPoolExecutor(max_workers=6) as pool:
            batched = list(pool.map(post, range(0, 60, 10)))
        metrics = client.get("/metrics").text
    # Same answers as the unbatched service gives, request by request.
    with TestClient(create_app(make_settings(tiny_model_dir, max_batch_size=1))) as plain:
        wait_ready(plain)
        for seed, probabilities in zip(range(0, 60, 10), batched, strict=True):
            files = [
                ("files", (f"{i}.png", png_bytes(seed=seed + i), "image/png")) for i in range(2)
            ]
            expected = [
                p["probability"]
                for p in plain.post("/v1/predict", files=files).json()["predictions"]
            ]
            np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert "classifier_inference_batch_size_count" in metrics


class _HeldModel:
    """The real model, but each call waits at a gate until the test opens it, so requests can
    be queued behind a running batch deterministically. Records every call's batch."""

    def __init__(self, model: LiteRTModel, *, fail: bool = False) -> None:
        self.model, self.fail = model, fail
        self.entered = threading.Event()  # a call is waiting at the gate
        self.gate = threading.Event()
        self.calls: list[np.ndarray] = []
        self._predict = model.predict_sync
        model.predict_sync = self.predict_sync  # type: ignore[method-assign]

    def predict_sync(self, *parts: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        batch = np.concatenate(parts)
        self.calls.append(batch)
        if self.fail:
            raise RuntimeError("interpreter failed")
        return self._predict(batch)


def _loaded(tiny_model_dir: Path, max_batch: int = 8) -> LiteRTModel:
    model = LiteRTModel(tiny_model_dir, threads=1, max_batch=max_batch)
    model.load()
    return model


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, 1), dtype=np.float32)


async def _within(awaitable: Awaitable[T]) -> T:
    """A lost request fails the test instead of hanging it."""
    return await asyncio.wait_for(awaitable, 10)


async def _queued_behind_a_running_batch(
    predictor: Predictor, held: _HeldModel, sizes: list[int]
) -> list[asyncio.Future[np.ndarray]]:
    """Start a 1-row request, wait until the model holds it, then queue `sizes` behind it."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[np.ndarray]] = [loop.create_future()]
    predictor.submit(_rows(1, 0), futures[0])
    assert await loop.run_in_executor(None, held.entered.wait, 10)
    for seed, n in enumerate(sizes, start=1):
        futures.append(loop.create_future())
        predictor.submit(_rows(n, seed), futures[-1])
    return futures


def test_queued_requests_form_batches_in_order_and_a_full_queue_refuses(
    tiny_model_dir: Path,
) -> None:
    """Queued while a batch runs: 3 and 2 rows do not fit one batch of 4 together, so the 2
    starts the next batch (order kept, no wait needed); past `max_queue`, Overloaded."""
    model = _loaded(tiny_model_dir, max_batch=4)
    held = _HeldModel(model)

    async def scenario() -> list[np.ndarray]:
        predictor = Predictor(model, Metrics(), max_batch_size=4, max_wait_ms=0, max_queue=2)
        predictor.start()
        futures = await _queued_behind_a_running_batch(predictor, held, [3, 2])
        with pytest.raises(Overloaded, match=r"queue is full \(2 requests\)") as refused:
            predictor.submit(_rows(1, 9), asyncio.get_running_loop().create_future())
        assert refused.value.headers == {"Retry-After": "1"}
        held.gate.set()
        results = await _within(asyncio.gather(*futures))
        await predictor.stop()
        return list(results)

    results = asyncio.run(scenario())
    assert [len(c) for c in held.calls] == [1, 3, 2]
    expected = [model.predict_sync(_rows(n, seed)) for seed, n in enumerate([1, 3, 2])]
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    model.close()


def test_a_request_whose_caller_gave_up_never_reaches_the_model(tiny_model_dir: Path) -> None:
    model = _loaded(tiny_model_dir)
    held = _HeldModel(model)

    async def scenario() -> np.ndarray:
        predictor = Predictor(model, Metrics(), max_batch_size=8, max_wait_ms=0)
        predictor.start()
        first, gave_up, kept = await _queued_behind_a_running_batch(predictor, held, [2, 3])
        gave_up.cancel()  # what a deadline or a closed connection does to the awaiting future
        held.gate.set()
        await _within(first)
        answer = await _within(kept)
        await predictor.stop()
        return answer

    answer = asyncio.run(scenario())
    assert [len(c) for c in held.calls] == [1, 3]  # the 2 cancelled rows were never run
    np.testing.assert_array_equal(held.calls[1], _rows(3, 2))
    np.testing.assert_allclose(answer, model.predict_sync(_rows(3, 2)), atol=1e-6)
    model.close()


def test_stop_answers_everything_queued_before_it_returns(tiny_model_dir: Path) -> None:
    model = _loaded(tiny_model_dir)
    held = _HeldModel(model)

    async def scenario() -> tuple[list[bool], bool, list[str]]:
        predictor = Predictor(model, Metrics(), max_batch_size=2, max_wait_ms=0)
        predictor.start()
        futures = await _queued_behind_a_running_batch(predictor, held, [1, 1, 1])
        stopping = asyncio.create_task(predictor.stop())
        await asyncio.sleep(0.05)
        stopped_early = stopping.done()  # it must wait for the held batch and the queue
        held.gate.set()
        await _within(stopping)
        threads = [t.name for t in threading.enumerate()]
        await asyncio.sleep(0)  # the answers' callbacks, scheduled before the thread ended
        return [f.done() and not f.cancelled() for f in futures], stopped_early, threads

    answered, stopped_early, threads = asyncio.run(scenario())
    assert answered == [True, True, True, True]
    assert not stopped_early
    assert "micro-batcher" not in threads
    assert [len(c) for c in held.calls] == [1, 2, 1]
    model.close()


def test_a_model_failure_reaches_every_request_of_its_batch(tiny_model_dir: Path) -> None:
    model = _loaded(tiny_model_dir)
    held = _HeldModel(model, fail=True)

    async def scenario() -> list[BaseException | np.ndarray]:
        predictor = Predictor(model, Metrics(), max_batch_size=8, max_wait_ms=0)
        predictor.start()
        futures = await _queued_behind_a_running_batch(predictor, held, [2, 1])
        held.gate.set()
        outcomes = await _within(asyncio.gather(*futures, return_exceptions=True))
        await predictor.stop()
        return list(outcomes)

    outcomes = asyncio.run(scenario())
    assert [len(c) for c in held.calls] == [1, 3]
    assert all(isinstance(o, RuntimeError) and "interpreter failed" in str(o) for o in outcomes)
    model.close()
