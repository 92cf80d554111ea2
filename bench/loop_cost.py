"""The event loop's CPU per inference request, in process, with and without the direct routes.

    flock /tmp/elpv-docker.lock .venv/bin/python -m bench.loop_cost [--rounds 5] [--no-report]

Two apps built by `create_app` on the same model, loaded side by side in one uvloop event loop
(as the server runs): the app as shipped, where `direct.DirectRoutes` serves the inference
routes, and the same app with that layer's route table emptied, so requests take FastAPI's
route (exit stacks, dependency solving, response validation and serialisation, exception
wrappers). Each round sends every app, for each of the two APIs (a multipart
`POST /v1/predict`, and the Open Inference Protocol's JSON `POST /v2/models/<name>/infer` with
the image as a BYTES input), 16 concurrent callers x N requests of one 300x300 ELPV PNG,
straight into the ASGI app (no sockets, no HTTP parsing: those cost both arms alike), in turn,
and measures:

- the event-loop thread's own CPU per request (`time.thread_time`; waiting costs nothing), the
  serial stage on a small pod (docs/serving.md, "The event loop is the serial stage");
- requests per second in process (decode and model on their threads, as in the server).

Writes the `serving-loop-cost` section of docs/benchmarks.md (or prints it, `--no-report`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from bench.report import machine_line, write_section
from bench.serving import ROOT, load_average, log, prepare_model, sample_png

Message = MutableMapping[str, Any]
Sample = tuple[float, float]  # (event-loop CPU us per request, requests per second)
Results = dict[tuple[str, str], list[Sample]]  # by (API, app)
Request = tuple[str, bytes, bytes]  # (path, body, content type)
APIS = ("native (multipart)", "Open Inference Protocol (JSON)")
SHIPPED, FASTAPI = "as shipped (direct route)", "FastAPI's route"
CALLERS = 16
BOUNDARY = b"bench-loop-cost"


def multipart(png: bytes, filename: str = "cell.png") -> tuple[bytes, bytes]:
    """(body, content type) of a multipart request with one image part named `files`."""
    body = (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="files"; filename="' + filename.encode() + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + BOUNDARY + b"--\r\n"
    )
    return body, b"multipart/form-data; boundary=" + BOUNDARY


def infer_json(png: bytes) -> tuple[bytes, bytes]:
    """(body, content type) of an Open Inference Protocol request with one encoded image."""
    image = {"name": "image", "shape": [1], "datatype": "BYTES"}
    body = {"inputs": [{**image, "data": [base64.b64encode(png).decode()]}]}
    return json.dumps(body).encode(), b"application/json"


def predict_scope(
    content_type: bytes, content_length: int, path: str = "/v1/predict"
) -> dict[str, Any]:
    """The ASGI scope of a `POST path` as uvicorn passes it (the tests use it too)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", content_type),
            (b"content-length", str(content_length).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def call(app: Any, request: Request) -> None:
    path, body, content_type = request
    scope = predict_scope(content_type, len(body), path)
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"{path} answered {sent[0]['status']}: {sent[1:]}")


async def measure(app: Any, request: Request, per_caller: int) -> tuple[float, float]:
    """(event-loop CPU us per request, requests per second)."""

    async def caller() -> None:
        for _ in range(per_caller):
            await call(app, request)

    cpu, wall = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    n = CALLERS * per_caller
    return cpu / n * 1e6, n / wall


async def run(model_dir: Path, rounds: int, per_caller: int) -> Results:
    from classifier.serving.app import create_app
    from classifier.serving.direct import DirectRoutes
    from classifier.serving.settings import Settings

    settings = Settings(model_dir=model_dir, allow_unauthenticated=True, log_level="warning")
    png = sample_png()
    shipped, fastapi = create_app(settings), create_app(settings)
    apps = {SHIPPED: shipped, FASTAPI: fastapi}
    layer: Any = fastapi.build_middleware_stack()
    fastapi.middleware_stack = layer
    while not isinstance(layer, DirectRoutes):
        layer = layer.app
    layer.routes = []  # every request falls through to FastAPI's router
    results: Results = {(api, label): [] for api in APIS for label in apps}
    async with shipped.router.lifespan_context(shipped), fastapi.router.lifespan_context(fastapi):
        await shipped.state.loading
        name = shipped.state.service.model.card.name
        requests = {
            APIS[0]: ("/v1/predict", *multipart(png)),
            APIS[1]: (f"/v2/models/{name}/infer", *infer_json(png)),
        }
        for app in apps.values():
            await app.state.loading
            for request in requests.values():
                await measure(app, request, 10)  # warm-up
        for r in range(rounds):
            for api, label in results:
                results[api, label].append(await measure(apps[label], requests[api], per_caller))
            latest = "; ".join(
                f"{api}, {label}: {v[-1][0]:.0f} us, {v[-1][1]:.0f}/s"
                for (api, label), v in results.items()
            )
            log(f"round {r + 1}/{rounds}: {latest}")
    return results


def report(results: Results, rounds: int, per_caller: int, model: str) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    lines = [
        "## Serving: the event loop's CPU per request, direct routes against FastAPI's",
        "",
        "Command: `flock /tmp/elpv-docker.lock .venv/bin/python -m bench.loop_cost "
        f"--rounds {rounds}` "
        f"(bench/loop_cost.py) — machine: {machine_line()} {time.strftime('%H:%M')}, "
        f"load average {load_average():.1f} at the start. Model: {model}. In process, no sockets: "
        f"{CALLERS} concurrent callers x {per_caller} requests of one 300x300 ELPV PNG per app "
        "and API per round, both apps loaded side by side and measured in turn; medians over "
        "rounds (range).",
        "",
        "| API | app | event-loop CPU per request (us) | requests/s in process |",
        "|---|---|---|---|",
    ]
    for (api, label), runs in results.items():
        cpu, rps = [r[0] for r in runs], [r[1] for r in runs]
        lines.append(
            f"| {api} | {label} | {med(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) | "
            f"{med(rps):.0f} ({min(rps):.0f}-{max(rps):.0f}) |"
        )
    lines.append("")
    for api in APIS:
        shipped, fastapi = results[api, SHIPPED], results[api, FASTAPI]
        cpu_ratio = med([a[0] / b[0] for a, b in zip(shipped, fastapi, strict=True)])
        rps_ratio = med([a[1] / b[1] for a, b in zip(shipped, fastapi, strict=True)])
        lines.append(
            f"- {api}, direct / FastAPI's route, medians of per-round ratios: event-loop CPU "
            f"{cpu_ratio:.2f}, requests/s {rps_ratio:.2f}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=60, help="per caller per round")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "bench-serving-model")
    parser.add_argument("--no-report", action="store_true", help="print, do not touch the docs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1:
        parser.error("--rounds and --requests must be at least 1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    model_dir, model = prepare_model(args.model_dir)
    import uvloop

    results = uvloop.run(run(model_dir, args.rounds, args.requests))
    markdown = report(results, args.rounds, args.requests, model)
    print(markdown)
    if not args.no_report:
        write_section("serving-loop-cost", markdown)
        log("wrote section serving-loop-cost of docs/benchmarks.md")


if __name__ == "__main__":
    main()
