"""The hot route served without FastAPI's per-request machinery.

FastAPI's route handling (exit stacks, dependency solving, the response's validation and
serialisation, its exception wrappers) costs the event loop about 100 us of CPU per predict
request, more than our three middlewares together. On two cores the event loop is the serial
stage that every request passes through twice, so that time sets the peak and the tail
(docs/serving.md, "The event loop is the serial stage"). The route stays declared on the
FastAPI app, so the OpenAPI document, other methods (405) and paths with a trailing slash are
as they were; this layer only takes over requests that match it exactly, runs the same
endpoint function with the app's own error handlers, and labels metrics and logs with the same
route. Unlike FastAPI's outermost handler, it does not re-raise an unexpected error after
answering 500: the handler has logged it with its traceback already.

The endpoint must take the `Request` alone and return a `Response` (FastAPI passes a returned
`Response` through unchanged, so the function serves both ways).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from classifier.serving.observability import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    """Innermost middleware: `(method, path)` in `routes` -> its endpoint, straight away."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: list[APIRoute],
        handlers: Mapping[type[BaseException] | int, Callable[..., object]],
    ) -> None:
        self.app = app
        self.routes = {
            (method, route.path): route for route in routes for method in route.methods or ()
        }
        # The app's exception handlers (errors.py), looked up by the exception's class as
        # Starlette does; `Exception` is among them, so every failure gets our error body.
        self.handlers = {k: v for k, v in handlers.items() if isinstance(k, type)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.routes.get((scope["method"], scope["path"]))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as the router sets it: metrics and the access log read it
        scope["endpoint"] = route.endpoint
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as exc:  # handed to the app's own handlers
            response = await self._handler(exc)(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler  # type: ignore[return-value]
        raise exc  # unreachable while `Exception` has a handler; never swallow an error
