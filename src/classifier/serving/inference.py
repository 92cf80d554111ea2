"""The one request path to the model, shared by the native API and the Open Inference Protocol:
image files or preprocessed rows -> out-of-distribution screening -> (micro-batched) model call.

Decoding, preprocessing and screening never run on the event loop. With micro-batching off, one
worker thread does all of a request's work and calls the model (serialised by the interpreter's
lock). With it on, the worker thread that decoded a single image queues its row for the batcher
thread itself; the images of a larger request are decoded in parallel and queued together.
Either way the event loop submits once and wakes once per single-image request: each wake-up
costs the loop CPU and a GIL hand-over (docs/serving.md, "The event loop is the serial stage").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from classifier.serving import ood
from classifier.serving.decoding import decode_image
from classifier.serving.errors import OutOfDistribution
from classifier.serving.state import ServiceState

Rows = npt.NDArray[np.float32]
# One input's work, run on a pool thread: its model row and its out-of-distribution flags.
Job = Callable[[], tuple[Rows, list[ood.Flag]]]


@dataclass(frozen=True)
class Answer:
    probabilities: Rows  # P(defective), one per input, in request order
    flags: list[list[ood.Flag]]  # per input; empty when it looks like the training images


def limits(service: ServiceState) -> ood.Limits:
    settings = service.settings
    return ood.Limits(
        input_size=service.model.input_size,
        max_aspect_ratio=settings.ood_max_aspect_ratio,
        min_pixel_std=settings.ood_min_pixel_std,
    )


def _screen(service: ServiceState, names: Sequence[str], flags: list[list[ood.Flag]]) -> None:
    """Count flagged inputs; with CLASSIFIER_OOD_ACTION=refuse, refuse the request (422)."""
    counter = service.metrics.out_of_distribution
    for input_flags in flags:
        for flag in input_flags:
            counter.labels(flag.reason).inc()
    if service.settings.ood_action != "refuse":
        return
    for name, input_flags in zip(names, flags, strict=True):
        if input_flags:
            reasons = "; ".join(f"{f.reason}: {f.message}" for f in input_flags)
            raise OutOfDistribution(
                f"image {name!r} is unlike the images the model was trained on ({reasons}); "
                "send an electroluminescence image of one solar cell, or set "
                "CLASSIFIER_OOD_ACTION=flag to get a flagged prediction instead",
                image=name,
            )


async def _run(service: ServiceState, names: Sequence[str], jobs: Sequence[Job]) -> Answer:
    loop = asyncio.get_running_loop()
    predictor = service.predictor
    if not predictor.batching:
        flags: list[list[ood.Flag]] = []

        def make_rows() -> Rows:
            done = [job() for job in jobs]
            flags.extend(f for _row, f in done)
            _screen(service, names, flags)  # a refusal leaves before the model call
            return np.stack([row for row, _f in done])

        probabilities = await loop.run_in_executor(
            service.decode_pool, predictor.predict_blocking, make_rows
        )
        return Answer(probabilities, flags)
    if len(jobs) == 1:
        # The common request: the decode thread screens the row and queues it for the batcher
        # itself, so the event loop submits once and wakes once, for the answer (it is the
        # serial stage: docs/serving.md). The row goes on as a view, not copied by np.stack.
        future: asyncio.Future[Rows] = loop.create_future()
        single: list[list[ood.Flag]] = []

        def decode_and_queue() -> None:
            if future.done():  # the caller gave up while the job waited for a thread
                return
            try:
                row, input_flags = jobs[0]()
                single.append(input_flags)
                _screen(service, names, single)  # a refusal leaves before the model call
                predictor.submit(row[np.newaxis], future)
            except Exception as exc:
                predictor.fail(future, exc)

        service.decode_pool.submit(decode_and_queue)
        probabilities = await future
        return Answer(probabilities, single)
    done = await asyncio.gather(*(loop.run_in_executor(service.decode_pool, j) for j in jobs))
    flags, rows = [f for _row, f in done], np.stack([row for row, _f in done])
    _screen(service, names, flags)
    probabilities = await predictor.predict(rows)
    return Answer(probabilities, flags)


async def predict_images(service: ServiceState, images: Sequence[tuple[str, bytes]]) -> Answer:
    """Image files (name, bytes) -> P(defective) and flags, via `decoding.decode_image`."""
    model = service.model
    size, channels = model.input_size, model.input_channels
    max_pixels = service.settings.max_image_pixels
    bounds = limits(service)

    def job(name: str, data: bytes) -> Job:
        def run() -> tuple[Rows, list[ood.Flag]]:
            decoded = decode_image(
                data, name=name, size=size, max_pixels=max_pixels, channels=channels
            )
            flags = ood.check_size(decoded.width, decoded.height, bounds)
            return decoded.row, flags + ood.check_row(decoded.row, bounds)

        return run

    return await _run(service, [n for n, _d in images], [job(n, d) for n, d in images])


async def predict_rows(service: ServiceState, rows: Rows) -> Answer:
    """Rows the client preprocessed itself, shape (N, H, W, C) of the model input."""
    bounds = limits(service)

    def job(row: Rows) -> Job:
        return lambda: (row, ood.check_row(row, bounds, tensor=True))

    return await _run(service, [str(i) for i in range(len(rows))], [job(r) for r in rows])
