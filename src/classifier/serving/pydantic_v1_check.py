"""FastAPI's refusal of pydantic.v1 models, without importing pydantic.v1 while there can be none.

FastAPI refuses pydantic.v1 models (no longer supported) by testing every parameter, body and
response model it declares, and every object its `jsonable_encoder` meets, against
`pydantic.v1.BaseModel`; each test imports `pydantic.v1`, a second, complete copy of pydantic
that nothing here uses, so the first route declared paid for importing it at every start
(docs/serving.md "Start-up").

A class or object can only be a pydantic.v1 model once `pydantic.v1` has been imported, since
that is where its base class is defined. So while it has not been, the answer is "no" without
asking; once anything has imported it, FastAPI's own test runs. The answers are FastAPI's, always.
`install()` wraps FastAPI's two tests where its modules look them up; it runs before any route
is declared (the `routes` package imports this module) and does nothing the second time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import fastapi._compat
import fastapi._compat.shared
import fastapi.encoders
import fastapi.utils

V1 = "pydantic.v1"
CHECKS = ("is_pydantic_v1_model_class", "is_pydantic_v1_model_instance")
# Where FastAPI looks the tests up: the defining module (annotation_is_pydantic_v1 calls the
# class test through its globals) and the modules that imported them by name.
MODULES: tuple[ModuleType, ...] = (
    fastapi._compat.shared,
    fastapi._compat,
    fastapi.encoders,
    fastapi.utils,
)


def _when_v1_is_imported(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def guarded(obj: Any) -> bool:
        return V1 in sys.modules and check(obj)

    guarded.__wrapped__ = check  # type: ignore[attr-defined]
    guarded.__name__ = check.__name__
    return guarded


def install() -> None:
    for name in CHECKS:
        original = getattr(fastapi._compat.shared, name, None)
        if original is None or hasattr(original, "__wrapped__"):
            continue  # gone from FastAPI (then tests/serving say so), or installed already
        guarded = _when_v1_is_imported(original)
        for module in MODULES:
            if getattr(module, name, None) is original:
                setattr(module, name, guarded)


install()
