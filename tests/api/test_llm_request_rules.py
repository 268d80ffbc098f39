"""What both LLM APIs (/api/v1/llm and the /v1 facade) do with the caller's own mistakes, with
slow or unreachable upstreams, and with what they tell whom — over real HTTP against the
stand-in LM Studio:

- a read timeout after the upstream accepted the request is one attempt and a 504; failures
  before it was accepted are retried, each retry logged at WARNING;
- an upstream's 4xx about the request is a 400 carrying its (sanitised) reason, not a 502;
- text that is not valid Unicode is a 400, and nothing is sent;
- users who are not admins never see the upstream's address; admins do;
- a model a caller names becomes a metric label only if it is configured or discovered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.api.llm_faults_support import MODEL, Headers, scrape, sse_events, value
from tests.conftest import AppUser, LLMEnv, UserFactory
from tests.upstream import StandInServer, unanswered_connect_url, unused_url

pytestmark = pytest.mark.usefixtures("no_server_errors")


@dataclass(frozen=True)
class Api:
    """One way to ask for a completion: where, with what body, and how errors come back."""

    name: str
    path: str
    stream: bool

    def body(self, text: str = "one two three", **fields: Any) -> dict[str, Any]:
        if self.path.startswith("/v1/"):
            messages = [{"role": "user", "content": text}]
            return {"model": "default", "messages": messages, "stream": self.stream, **fields}
        return {"prompt": text, **fields}

    def error(self, response: httpx.Response) -> tuple[str, str]:
        """(type, message) of an error response, in either API's shape."""
        body = response.json()
        if self.path.startswith("/v1/"):
            return body["error"]["type"], body["error"]["message"]
        return body["type"], body["detail"]


APIS = [
    Api("generate", "/api/v1/llm/generate", stream=False),
    Api("stream", "/api/v1/llm/stream", stream=False),
    Api("facade", "/v1/chat/completions", stream=False),
    Api("facade_stream", "/v1/chat/completions", stream=True),
]
each_api = pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def warnings_of(logger_name: str = "app.services.llm") -> Iterator[list[str]]:
    """The messages logged at WARNING or above by the app's LLM layer while the block runs."""
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    messages: list[str] = []
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        messages.extend(r.getMessage() for r in records if r.levelno >= logging.WARNING)


@pytest.fixture(scope="module")
async def user(make_user: UserFactory) -> AppUser:
    """An ordinary user (not an admin)."""
    return await make_user()


# ── retries: only before the upstream accepted the request ──────────────────


@each_api
async def test_read_timeout_is_one_attempt_and_a_504_naming_the_remedies(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    api: Api,
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_timeout=1, lmstudio_max_retries=2)
    upstream.delay(2.5, times=None)  # accepts every request, then stalls past the timeout
    with warnings_of() as logged:
        response = await client.post(api.path, json=api.body(), headers=admin_headers)
    assert response.status_code == 504, response.text
    kind, message = api.error(response)
    assert kind == "llm_timeout_error"
    assert message == (
        f"LM Studio at {upstream.base_url} did not answer within 1 s (model {MODEL}). It "
        "accepted the request, so the model is probably still generating; it was not sent "
        "again. Raise LMSTUDIO_TIMEOUT, ask for fewer tokens (max_tokens), or use a smaller or "
        "faster model."
    )
    assert len(upstream.chat_requests) == 1
    assert not [m for m in logged if "llm retry" in m]
    assert [m for m in logged if m.startswith("llm ") and "failed: llm_timeout_error" in m]


async def test_read_timeout_is_told_from_a_disconnect(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    # A connection closed with no reply at all must not read as a timeout.
    llm_env.set(lmstudio_model=MODEL, lmstudio_timeout=1, lmstudio_max_retries=1)
    upstream.delay(2.5)
    slow = await client.post("/api/v1/llm/generate", json={"prompt": "x"}, headers=admin_headers)
    assert slow.status_code == 504, slow.text
    assert len(upstream.chat_requests) == 1

    async def hang_up(request: web.Request, _record: object) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()  # no status line, no headers: the request never "happened"
        raise ConnectionResetError

    upstream.enqueue(hang_up, times=None)
    closed = await client.post("/api/v1/llm/generate", json={"prompt": "x"}, headers=admin_headers)
    assert closed.status_code == 502, closed.text
    assert closed.json()["detail"] == (
        f"LM Studio at {upstream.base_url} closed the connection before its reply was "
        f"complete (model {MODEL})"
    )
    # Resent at once, as to a pooled connection the server had closed, then retried once
    # (nothing had been answered).
    assert len(upstream.chat_requests) == 1 + 3


@each_api
async def test_refused_connection_is_retried_with_a_warning_per_retry(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers, api: Api
) -> None:
    url = unused_url()
    llm_env.set(lmstudio_model=MODEL, lmstudio_base_url=url, lmstudio_max_retries=2)
    prompt = "a private prompt that must not be logged"
    with warnings_of() as logged:
        response = await client.post(api.path, json=api.body(prompt), headers=admin_headers)
    assert response.status_code == 503, response.text
    assert api.error(response)[0] == "llm_connection_error"
    retries = [m for m in logged if m.startswith("llm retry")]
    assert [m.split(" of ")[0] for m in retries] == ["llm retry 1/2", "llm retry 2/2"]
    assert all("llm_connection_error" in m and f"base_url={url}" in m for m in retries), retries
    assert not [m for m in logged if prompt in m]


async def test_connect_timeout_is_retried_with_a_warning_per_retry(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    with unanswered_connect_url() as url:
        llm_env.set(
            lmstudio_model=MODEL, lmstudio_base_url=url, lmstudio_timeout=1, lmstudio_max_retries=1
        )
        with warnings_of() as logged:
            response = await client.post(
                "/api/v1/llm/generate", json={"prompt": "x"}, headers=admin_headers
            )
    assert response.status_code == 504, response.text
    assert response.json()["detail"] == (
        f"LM Studio at {url} did not accept a connection within 1 s: is LM Studio's server "
        "running? Start it in LM Studio (Developer tab) or with `lms server start`, and check "
        "LMSTUDIO_BASE_URL."
    )
    retries = [m for m in logged if m.startswith("llm retry")]
    assert [m.split(" of ")[0] for m in retries] == ["llm retry 1/1"]
    assert "llm_timeout_error" in retries[0]


async def test_server_errors_are_retried_with_the_status_in_the_warning(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=2, lmstudio_api_key="lm-secret-42")
    upstream.api_key = "lm-secret-42"
    upstream.fail(503, times=2)
    with warnings_of() as logged:
        response = await client.post(
            "/api/v1/llm/generate", json={"prompt": "x"}, headers=admin_headers
        )
    assert response.status_code == 200, response.text
    assert len(upstream.chat_requests) == 3
    retries = [m for m in logged if m.startswith("llm retry")]
    assert len(retries) == 2
    assert all("llm_upstream_error HTTP 503" in m for m in retries), retries
    assert not [m for m in logged if "lm-secret-42" in m]


# ── an upstream's 4xx about the request is the caller's mistake: 400 ─────────


@each_api
@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_upstream_4xx_about_the_request_is_400_with_its_reason(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    user: AppUser,
    api: Api,
    status: int,
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=2)
    reason = "Context length exceeded:\r\nINFO forged log line\x00 " + "x" * 1000
    upstream.fail(status, body={"error": reason}, times=2)
    admin = await client.post(api.path, json=api.body(), headers=admin_headers)
    other = await client.post(api.path, json=api.body(), headers=user.headers)
    assert len(upstream.chat_requests) == 2  # one each: never retried
    for response in (admin, other):
        assert response.status_code == 400, response.text
        kind, message = api.error(response)
        assert kind == "invalid_request_error"
        assert not {"\r", "\n", "\x00"} & set(message)
        assert len(message) < 450
        assert message.endswith("x…")
    assert api.error(admin)[1].startswith(
        f"LM Studio at {upstream.base_url} refused the request (HTTP {status}): Context length "
        "exceeded: INFO forged log line x"
    )
    assert api.error(other)[1].startswith(
        f"LM Studio refused the request (HTTP {status}): Context length exceeded: INFO forged"
    )


async def test_upstream_auth_rejection_stays_a_502(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    # 401/403 from the upstream are our configuration's fault, not the caller's.
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    upstream.fail(403, body={"error": "forbidden"})
    response = await client.post(
        "/api/v1/llm/generate", json={"prompt": "x"}, headers=admin_headers
    )
    assert response.status_code == 502
    assert response.json()["type"] == "llm_authentication_error"


async def test_structured_ladder_still_steps_down_on_an_upstream_400(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    upstream.json_schema_supported = False  # 400 to json_schema: the next rung is asked
    upstream.json_object_supported = True
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    upstream.reply_json({"n": 3})
    response = await client.post(
        "/api/v1/llm/structured", json={"prompt": "x", "schema": schema}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"n": 3}
    assert response.json()["mode"] != "json_schema"
    assert len(upstream.chat_requests) == 2


# ── text that is not valid Unicode ──────────────────────────────────────────


@each_api
async def test_lone_surrogate_is_refused_and_nothing_is_sent(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    api: Api,
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=2)
    raw = httpx.Request("POST", "/", json=api.body("PLACEHOLDER")).content
    body = raw.replace(b'"PLACEHOLDER"', b'"half a pair: \\ud800 here"')
    response = await client.post(
        api.path, content=body, headers={**admin_headers, "content-type": "application/json"}
    )
    if api.path.startswith("/v1/"):
        assert response.status_code == 400, response.text
        kind, message = api.error(response)
        assert kind == "invalid_request_error"
        assert message.startswith("The request holds text that is not valid Unicode")
    else:  # /api/v1/llm's typed fields refuse it while validating, as any bad input: 422
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["type"] == "string_unicode"
    assert upstream.chat_requests == []


# ── who is told the upstream's address ──────────────────────────────────────


@each_api
async def test_only_admins_are_told_the_upstreams_address(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    admin_headers: Headers,
    user: AppUser,
    api: Api,
) -> None:
    url = unused_url("127.0.0.2")
    llm_env.set(lmstudio_model=MODEL, lmstudio_base_url=url, lmstudio_max_retries=0)
    as_user = await client.post(api.path, json=api.body(), headers=user.headers)
    as_admin = await client.post(api.path, json=api.body(), headers=admin_headers)
    hint = (
        "is LM Studio's server running? Start it in LM Studio (Developer tab) or with "
        "`lms server start`, and check LMSTUDIO_BASE_URL."
    )
    assert as_user.status_code == as_admin.status_code == 503
    assert api.error(as_user)[1] == f"Cannot connect to LM Studio: {hint}"
    assert api.error(as_admin)[1] == f"Cannot connect to LM Studio at {url}: {hint}"
    assert "127.0.0.2" not in as_user.text


async def test_model_list_detail_shows_the_address_to_admins_only(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    user: AppUser,
) -> None:
    upstream.no_models_loaded()
    path = "/api/v1/llm-settings/lmstudio/models?detail=true"
    as_user = (await client.get(path, headers=user.headers)).json()
    as_admin = (await client.get(path, headers=admin_headers)).json()
    assert as_admin["base_url"] == upstream.base_url
    assert as_admin["message"].startswith(f"LM Studio at {upstream.base_url} has no model loaded")
    assert as_user["base_url"] is None
    assert as_user["message"].startswith("LM Studio has no model loaded: load a model")
    assert upstream.base_url not in str(as_user)
    assert as_user["models"] == as_admin["models"]


# ── metric labels: bounded by configuration, not by callers ─────────────────


async def test_models_callers_name_are_labelled_other(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    await client.get("/v1/models", headers=admin_headers)  # discovery lists the stand-in's
    before = await scrape(client)
    size_before = len((await client.get("/metrics")).content)
    names = [f"lmstudio/made-up-{i}" for i in range(20)]
    for name in names:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "x"}]},
            headers=admin_headers,
        )
        assert response.status_code == 404
    too_long = await client.post(
        "/v1/chat/completions",
        json={"model": "y" * 100_000, "messages": [{"role": "user", "content": "x"}]},
        headers=admin_headers,
    )
    assert too_long.status_code == 400
    discovered = await client.post(
        "/v1/chat/completions",
        json={
            "model": "lmstudio/mistral-7b-instruct",
            "messages": [{"role": "user", "content": "x"}],
        },
        headers=admin_headers,
    )
    assert discovered.status_code == 200, discovered.text
    after = await scrape(client)
    assert not [key for key in after if "made-up" in str(key) or "yyyy" in str(key)]
    other = {"provider": "lmstudio", "model": "other", "kind": "complete"}
    sample = {**other, "outcome": "llm_model_not_found"}
    assert value(after, "llm_requests_total", **sample) - value(
        before, "llm_requests_total", **sample
    ) == len(names)
    ok = {"provider": "lmstudio", "model": "mistral-7b-instruct", "kind": "complete"}
    assert value(after, "llm_requests_total", **ok, outcome="ok") >= 1
    assert len((await client.get("/metrics")).content) - size_before < 8_000


async def test_streamed_reply_is_relayed_when_nothing_fails(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    # The control case for the stream rows above: the same body, with a healthy upstream.
    llm_env.set(lmstudio_model=MODEL, lmstudio_timeout=1, lmstudio_max_retries=2)
    response = await client.post("/api/v1/llm/stream", json={"prompt": "x"}, headers=admin_headers)
    assert [name for name, _ in sse_events(response.text)][-1] == "done"
