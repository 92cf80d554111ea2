"""`python -m classifier.serving` / `classifier-serve`: one uvicorn process, settings from env."""

from __future__ import annotations

import sys

import uvicorn

from classifier.serving.app import create_app
from classifier.serving.observability import logging_config
from classifier.serving.settings import Settings


def main() -> None:
    settings = Settings()
    app = create_app(settings)
    # One process per pod (scale out with the HPA): no uvicorn workers. uvicorn handles SIGTERM:
    # stop accepting, finish in-flight requests (up to shutdown_timeout_s), run the lifespan
    # shutdown, exit 0.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level),
        access_log=False,  # our middleware logs each request with its request id
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        server_header=False,
    )
    # The model never loaded: exit non-zero so the orchestrator sees a crash, not a quiet pod.
    if app.state.service.load_error is not None:
        sys.exit(1)


if __name__ == "__main__":
    main()
