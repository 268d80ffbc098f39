"""The hot routes served without dependency solving (`app.api.direct_routes`): what they
do that FastAPI's handler did not show elsewhere, and the guard against a skipped dependency."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from app.api.deps import SettingsDep, get_current_user
from app.api.direct_routes import direct_routes
from app.main import create_app
from tests.api.llm_faults_support import MODEL
from tests.conftest import LLMEnv
from tests.upstream import StandInServer

CHAT = "/v1/chat/completions"
GENERATE = "/api/v1/llm/generate"
Headers = dict[str, str]


class Body(BaseModel):
    prompt: str


async def _endpoint(body: Body, settings: SettingsDep) -> None: ...


def _rate_limit() -> None: ...


def test_a_route_with_a_dependency_the_direct_route_does_not_run_is_refused() -> None:
    router = APIRouter(dependencies=[Depends(get_current_user)])
    router.post("/ok")(_endpoint)
    router.post("/limited", dependencies=[Depends(_rate_limit)])(_endpoint)
    with pytest.raises(TypeError, match="/limited: a direct route authenticates the caller"):
        direct_routes(router)


def test_a_route_without_authentication_is_refused() -> None:
    router = APIRouter()
    router.post("/open")(_endpoint)
    with pytest.raises(TypeError, match="/open"):
        direct_routes(router)


def test_the_openapi_document_still_describes_the_direct_routes() -> None:
    app: FastAPI = create_app()
    paths = app.openapi()["paths"]
    for path, model in (
        (CHAT, "ChatCompletionRequest"),
        (GENERATE, "GenerateRequest"),
        ("/api/v1/llm/structured", "StructuredRequest"),
        ("/api/v1/llm/stream", "GenerateRequest"),
    ):
        operation = paths[path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/" + model), path
        assert operation["security"] == [{"OAuth2PasswordBearer": []}], path
        assert "422" in operation["responses"], path


@pytest.mark.parametrize("path", [CHAT, GENERATE])
async def test_an_anonymous_caller_is_401_before_its_body_is_read(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(
        path, content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json; charset=utf-8", 200),
        ("application/vnd.api+json", 200),
        ("text/plain", 422),
        (None, 422),
    ],
)
async def test_the_body_is_json_only_when_its_content_type_says_so(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    content_type: str | None,
    status: int,
) -> None:
    llm_env.set(lmstudio_model=MODEL)
    headers = dict(admin_headers)
    if content_type is not None:
        headers["content-type"] = content_type
    response = await client.post(GENERATE, content=b'{"prompt": "hi"}', headers=headers)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["detail"][0]["msg"].startswith("Input should be a valid dict")


async def test_json_that_orjson_refuses_but_json_accepts_is_read_as_before(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    llm_env.set(lmstudio_model=MODEL)
    # NaN is not JSON, yet Python's json module (FastAPI's decoder) reads it: the
    # temperature's bounds refuse it, as before.
    body = b'{"prompt": "hi", "temperature": NaN}'
    headers = {**admin_headers, "content-type": "application/json"}
    response = await client.post(GENERATE, content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "temperature"]
    assert upstream.chat_requests == []
