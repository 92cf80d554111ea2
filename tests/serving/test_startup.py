"""What a start imports (docs/serving.md "Start-up"): each test fails if a cut comes back.

Each check runs in a fresh interpreter, since this test process has imported much already."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import PydanticV1NotSupportedError

from classifier.serving import pydantic_v1_check


def _run(code: str, model_dir: Path) -> None:
    env = {
        **os.environ,
        "CLASSIFIER_MODEL_DIR": str(model_dir),
        "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_building_the_app_and_its_openapi_document_imports_no_pydantic_v1(
    tiny_model_dir: Path,
) -> None:
    """FastAPI tests every declared model against pydantic.v1's base class, and that test
    imports pydantic.v1 unless pydantic_v1_check makes it wait until something else has."""
    _run(
        "import sys\n"
        "from classifier.serving.app import create_app\n"
        "from classifier.serving.settings import Settings\n"
        "create_app(Settings()).openapi()\n"
        "assert 'pydantic.v1' not in sys.modules, 'building the app imported pydantic.v1'\n",
        tiny_model_dir,
    )


def test_the_server_config_imports_no_websocket_library(tiny_model_dir: Path) -> None:
    """uvicorn's default looks for a WebSocket library at every start and imports it if
    installed (wsproto is, in the development environment); the API has no WebSocket route."""
    _run(
        "import sys\n"
        "from classifier.serving.__main__ import server_config\n"
        "from classifier.serving.app import create_app\n"
        "from classifier.serving.settings import Settings\n"
        "settings = Settings()\n"
        "server_config(create_app(settings), settings).load()\n"
        "found = [m for m in ('wsproto', 'websockets') if m in sys.modules]\n"
        "assert not found, f'the server imported {found}'\n",
        tiny_model_dir,
    )


def test_fastapi_still_refuses_pydantic_v1_models() -> None:
    """The check is FastAPI's own once pydantic.v1 is imported: a v1 model is refused as a
    response model and by the encoder, as without pydantic_v1_check."""
    pydantic_v1_check.install()  # installed already (by the routes); again is harmless
    with warnings.catch_warnings():  # pydantic warns about pydantic.v1 on newer Pythons
        warnings.simplefilter("ignore", UserWarning)
        from pydantic import v1

    class Old(v1.BaseModel):
        x: int

    router = APIRouter()
    with pytest.raises(PydanticV1NotSupportedError, match=r"pydantic\.v1 models"):

        @router.get("/old", response_model=Old)
        def old() -> None: ...

    with pytest.raises(PydanticV1NotSupportedError, match=r"pydantic\.v1 models"):
        jsonable_encoder(Old(x=1))


@pytest.mark.parametrize(("setting", "threads"), [(None, 1), ("2", 2)])
def test_main_runs_numpy_blas_on_one_thread_unless_told(setting: str | None, threads: int) -> None:
    """OpenBLAS's threads spin at import, costing a start as much CPU as NumPy's import; the
    service calls no BLAS. An operator's OPENBLAS_NUM_THREADS wins. main() stops at the missing
    model folder, after it has imported NumPy."""
    pytest.importorskip("threadpoolctl")  # reads the pool size from the loaded library
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env |= {"CLASSIFIER_MODEL_DIR": "/nonexistent", "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true"}
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    code = (
        "import sys, threadpoolctl\n"
        "from classifier.serving.__main__ import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert 'cannot start' in str(exc), exc\n"
        "assert 'numpy' in sys.modules\n"
        "print([p['num_threads'] for p in threadpoolctl.threadpool_info()\n"
        "       if p['internal_api'] == 'openblas'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"[{threads}]"


def test_main_freezes_what_start_up_built_so_collections_skip_it(tiny_model_dir: Path) -> None:
    """The objects of the start (tens of thousands) leave the youngest generation frozen, so
    the first collections after the pause do not walk them all. main() runs up to the point
    where it would serve."""
    _run(
        "import gc, sys\n"
        "import classifier.serving.__main__ as entry\n"
        "class Stop:\n"
        "    def run(self):\n"
        "        frozen, young = gc.get_freeze_count(), gc.get_count()[0]\n"
        "        assert gc.isenabled()\n"
        "        assert frozen > 20000, f'{frozen} objects frozen'\n"
        "        assert young < 1000, f'{young} objects in the youngest generation'\n"
        "        sys.exit(0)\n"
        "entry.graceful_server = lambda config: Stop()\n"
        "entry.main()\n",
        tiny_model_dir,
    )
