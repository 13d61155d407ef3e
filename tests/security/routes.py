"""The gateway's route table, read from the app itself, so every security test covers a new endpoint the moment it
is added: what is public, what is admin-only, what charges the rate limiter, and how to fill its path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIWebSocketRoute, RouteContext, iter_route_contexts
from starlette.routing import Mount

from engineroom.api.app import create_app
from engineroom.api.deps import require_admin
from tests.settings import make_settings

#: Routes that answer without a token, on purpose. A route missing from here that answers without a token fails
#: ``test_only_the_allow_listed_routes_answer_without_a_token``: add it here only if it must be public.
PUBLIC_ROUTES = {
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
#: Mounted static files (public: the dashboard's scripts, which hold no data).
PUBLIC_MOUNTS = {"/static"}
#: WebSocket endpoints; they check the token themselves and are covered by ``test_websocket_access.py``.
WEBSOCKETS = {"/ws"}
#: The name of the dependency that hands out the submit rate limiter (``api/deps.py``).
RATE_LIMITER_DEPENDENCY = "get_rate_limiter"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    #: FastAPI's view of the route as included (prefix, router-wide dependencies and all).
    route: RouteContext

    @property
    def is_public(self) -> bool:
        return (self.method, self.path) in PUBLIC_ROUTES

    @property
    def path_params(self) -> list[str]:
        return list(getattr(self.route, "param_convertors", {}))

    @property
    def takes_body(self) -> bool:
        return getattr(self.route, "body_field", None) is not None

    @property
    def is_admin_only(self) -> bool:
        return any(dep.call is require_admin for dep in self._dependencies())

    @property
    def is_rate_limited(self) -> bool:
        return any(getattr(dep.call, "__name__", "") == RATE_LIMITER_DEPENDENCY for dep in self._dependencies())

    def _dependencies(self) -> Iterator[Dependant]:
        dependant = getattr(self.route, "dependant", None)
        return _walk(dependant) if dependant is not None else iter(())

    def url(self, ids: dict[str, str]) -> str:
        """The path with each parameter filled from ``ids``.

        Raises:
          KeyError: a parameter this test suite does not know how to fill (a new kind of resource).
        """
        missing = [name for name in self.path_params if name not in ids]
        if missing:
            raise KeyError(f"{self}: no id for path parameter(s) {missing}; add one to the security fixtures")
        return self.path.format(**{name: ids[name] for name in self.path_params})

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _walk(dependency)


def build_app() -> FastAPI:
    """The app the gateway runs (its routes do not depend on settings); no lifespan runs."""
    return create_app(make_settings())


def http_endpoints(app: FastAPI) -> list[Endpoint]:
    """Every HTTP method of every route, routers' included (HEAD left out: Starlette answers it with the GET
    handler)."""
    return [
        Endpoint(method, str(context.path), context)
        for context in iter_route_contexts(app.routes)
        if context.methods is not None
        for method in sorted(context.methods)
        if method != "HEAD"
    ]


def unclassified_routes(app: FastAPI) -> list[Any]:
    """Routes that are neither HTTP routes, the known mounts nor the known WebSockets: a new kind of route these
    tests would not try."""
    return [
        context.path
        for context in iter_route_contexts(app.routes)
        if context.methods is None
        and not (isinstance(context.original_route, Mount) and context.path in PUBLIC_MOUNTS)
        and not (isinstance(context.original_route, APIWebSocketRoute) and context.path in WEBSOCKETS)
    ]


APP = build_app()
ENDPOINTS = http_endpoints(APP)
PROTECTED = [endpoint for endpoint in ENDPOINTS if not endpoint.is_public]
