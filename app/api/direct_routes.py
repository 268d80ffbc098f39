"""The hot routes (the facade's chat completions, `/api/v1/llm/*`) without FastAPI's
per-request dependency solving.

Those routes are declared on their routers like any other: the declaration is what the
OpenAPI document shows and what the fuzz tests exercise. `direct_routes` puts a plain
Starlette route in front of each, which does for it what FastAPI's request handler did,
with the same errors, and nothing else (the caller comes first: an anonymous caller's body
is neither read nor decoded; FastAPI decoded it before it ran the authentication):

1. the caller authenticated by `get_current_user` (401 as before; the credential cache),
2. the body read (413 past MAX_REQUEST_BYTES) and decoded, with orjson,
3. validated by the route's own body field (the same 422, raised as RequestValidationError
   for the app's handlers),
4. the endpoint called with the body and the settings; it returns the Response itself.

A route whose parameters or dependencies are not exactly these is refused at start-up, so
that a dependency added later to such a route cannot be skipped silently (nor can
`app.dependency_overrides` replace these two). Profiled at 50 clients, FastAPI's handler,
`solve_dependencies` and the per-route exit stacks were ~19 % of the serving thread's time
on the facade.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import orjson
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.deps import SettingsDep, current_user_of, get_current_user
from app.core.config import get_settings

_SETTINGS = get_args(SettingsDep)[1].dependency


def direct_routes(router: APIRouter, prefix: str = "") -> list[Route]:
    """A plain route for each of `router`'s routes that take a JSON body (mounted under
    `prefix`), to be placed ahead of the router in the app's routes."""
    return [
        Route(prefix + route.path, _DirectEndpoint(route), methods=sorted(route.methods or ()))
        for route in router.routes
        if isinstance(route, APIRoute) and route.body_field is not None
    ]


class _DirectEndpoint:
    """An ASGI app serving one APIRoute's endpoint (see the module's docstring)."""

    def __init__(self, route: APIRoute) -> None:
        dependant = route.dependant
        calls = {(sub.name, sub.call) for sub in dependant.dependencies}
        extra = calls - {(None, get_current_user), ("settings", _SETTINGS)}
        other_params = (
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
        )
        if (None, get_current_user) not in calls or extra or any(other_params):
            raise TypeError(
                f"{route.path}: a direct route authenticates the caller and passes the body "
                "and `settings` only; serve this route through FastAPI or teach "
                "app.api.direct_routes what it needs"
            )
        assert route.body_field is not None
        self.path = route.path
        self.body_field = route.body_field
        self.with_settings = ("settings", _SETTINGS) in calls
        self.endpoint: Callable[..., Awaitable[Response]] = route.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        await current_user_of(request)
        body = await _json_body(request)
        if body is _MISSING:  # FastAPI's error for an empty body
            errors = [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
            raise RequestValidationError(errors)
        value, errors = self.body_field.validate(body, {}, loc=("body",))
        if errors:
            raise RequestValidationError(errors, body=body)
        arguments: dict[str, Any] = {self.body_field.name: value}
        if self.with_settings:
            arguments["settings"] = get_settings()
        response = await self.endpoint(**arguments)
        if not isinstance(response, Response):
            raise TypeError(f"{self.path}: a direct route's endpoint returns a Response")
        await response(scope, receive, send)


_MISSING: Any = object()  # an empty body


async def _json_body(request: Request) -> Any:
    """The body as FastAPI decodes it: JSON when declared so, else the raw bytes (which
    the model refuses), `_MISSING` when empty."""
    try:
        raw = await request.body()
    except HTTPException:
        raise  # 413 from BodySizeLimit
    except Exception as exc:
        raise HTTPException(400, detail="There was an error parsing the body") from exc
    if not raw:
        return _MISSING
    if not _declares_json(request.headers.get("content-type")):
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # What orjson refuses and the json module accepts (NaN, integers past 64 bits, lone
    # surrogates, UTF-16) decodes as it did; invalid JSON fails with json's message.
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error], body=exc.doc) from exc
    except Exception as exc:
        raise HTTPException(400, detail="There was an error parsing the body") from exc


def _declares_json(content_type: str | None) -> bool:
    if content_type == "application/json":
        return True
    if not content_type:
        return False  # FastAPI's strict content type: no header is not JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
