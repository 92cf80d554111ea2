"""`python -m classifier.serving` / `classifier-serve`: one uvicorn process, settings from env.

Start-up time matters (a pod takes no traffic until it is ready; docs/serving.md "Start-up"):
the web stack is imported inside `main()`, after the garbage collector is paused. Importing
creates tens of thousands of long-lived objects (modules, classes, FastAPI's routes and their
validators) and next to no garbage, so collections during it only cost time. Once the app is
built they are frozen (`gc.freeze()`): left alone, they would all sit in the youngest
generation, and the first collections after the pause (one young, one middle) would each walk
all of them, on the way to ready. Frozen, they are never collected: they live as long as the
process anyway.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from classifier.serving.settings import Settings


def graceful_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn, except that a completed graceful shutdown exits 0.

    On SIGTERM uvicorn stops accepting, finishes in-flight requests (up to
    `timeout_graceful_shutdown`), runs the lifespan shutdown, and then re-raises the signal so
    the process dies "killed by SIGTERM" (status 143). A clean drain is a success, so we keep
    uvicorn's handling and drop the re-raise.
    """
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """One process per pod (scale out with the HPA): no uvicorn workers. No WebSocket
    protocol: the API has no WebSocket route, and with uvicorn's default ("auto") every start
    imports a WebSocket library when one is installed (docs/serving.md "Start-up")."""
    import uvicorn

    from classifier.serving.observability import logging_config

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level),
        access_log=False,  # our middleware logs each request with its request id
        loop="uvloop",
        http="httptools",
        ws="none",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        server_header=False,
    )


def main() -> None:
    # NumPy's OpenBLAS starts a thread per core when imported, and they spin for a while: on a
    # 2-core pod that costs as much CPU as importing NumPy itself, in the middle of a start.
    # Nothing here calls BLAS (LiteRT runs the model on its own threads; preprocessing is
    # element-wise), so one thread. Set before NumPy is imported; an operator's setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.disable()  # until the app is built: see the module docstring
    try:
        from pydantic import ValidationError

        from classifier.serving.settings import REPLACED, Settings

        replaced = [f"{old} (use {new})" for old, new in REPLACED.items() if old in os.environ]
        if replaced:
            sys.exit(f"invalid settings: no longer read: {', '.join(replaced)}")
        try:
            settings = Settings()
        except ValidationError as exc:
            # A typo in a manifest should read as one clear line, not a traceback.
            problems = "; ".join(
                f"CLASSIFIER_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                if err["loc"]
                else str(err["msg"]).removeprefix("Value error, ")
                for err in exc.errors()
            )
            sys.exit(f"invalid settings: {problems}")

        from classifier.serving.runtime import ModelLoadError, check_model_dir

        try:
            check_model_dir(settings.model_dir)  # fail at once, not as a pod never ready
        except ModelLoadError as exc:
            sys.exit(f"cannot start: {exc}")

        from classifier.serving.app import create_app

        app = create_app(settings)
        config = server_config(app, settings)
        gc.freeze()  # see the module docstring
    finally:
        gc.enable()
    graceful_server(config).run()
    # The model never loaded: exit non-zero so the orchestrator sees a failure, not a quiet pod.
    if app.state.service.load_error is not None:
        sys.exit(1)


if __name__ == "__main__":
    main()
