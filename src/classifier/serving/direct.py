"""The hot routes served without FastAPI's per-request machinery.

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

The routes are `POST /v1/predict` and the Open Inference Protocol's `infer`, so clients of
either API get the same path. An endpoint must take the `Request`, then the route's path
parameters by name (strings, as FastAPI passes them to a `str` parameter), and return a
`Response` (FastAPI passes a returned `Response` through unchanged, so the function serves
both ways).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from classifier.serving.observability import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    """Innermost middleware: a request that matches one of `routes` -> its endpoint, straight
    away. Paths without parameters are one dict lookup; the others are matched as the router
    matches them (`Route.matches`), in order."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: list[APIRoute],
        handlers: Mapping[type[BaseException] | int, Callable[..., object]],
    ) -> None:
        self.app = app
        self.routes = routes
        # The app's exception handlers (errors.py), looked up by the exception's class as
        # Starlette does; `Exception` is among them, so every failure gets our error body.
        self.handlers = {k: v for k, v in handlers.items() if isinstance(k, type)}

    @property
    def routes(self) -> list[APIRoute]:
        return self._routes

    @routes.setter
    def routes(self, routes: list[APIRoute]) -> None:
        """Set the routes served (`[]` sends every request on to FastAPI: bench.loop_cost)."""
        self._routes = list(routes)
        self._exact = {
            (method, route.path): route
            for route in routes
            if not route.param_convertors
            for method in route.methods or ()
        }
        self._templated = [route for route in routes if route.param_convertors]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: APIRoute | None = None
        params: dict[str, object] = {}
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self._exact.get((scope["method"], scope["path"]))
            if route is None:
                route, params = self._match(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as the router sets it: metrics and the access log read it
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request, **params)
        except Exception as exc:  # handed to the app's own handlers
            response = await self._handler(exc)(request, exc)
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[APIRoute | None, dict[str, object]]:
        for route in self._templated:
            # PARTIAL (the path matches, the method does not) falls through: FastAPI's 405.
            match, child = route.matches(scope)
            if match is Match.FULL:
                return route, dict(child["path_params"])
        return None, {}

    def _handler(self, exc: Exception) -> Handler:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler  # type: ignore[return-value]
        raise exc  # unreachable while `Exception` has a handler; never swallow an error
