"""Micro-batching: concurrent requests share model calls and each gets its own rows back."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from classifier.serving.app import create_app
from classifier.serving.batching import Predictor
from classifier.serving.observability import Metrics
from classifier.serving.runtime import LiteRTModel

from .conftest import make_settings, png_bytes, wait_ready


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
        results = await asyncio.gather(*(predictor.predict(r) for r in requests))
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
