"""Every case the fuzzer (test_openapi.py) found, kept as a plain request against the same
running app on PostgreSQL: the answer must be a clear 4xx or a success, never a 5xx.

Found on branch `proof` (before the fixes of issue 9 were merged); each entry names the
route and the input, shrunk by hand to what matters.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.running_app import RunningApp

# (id, role, method, path, params, json body)
CASES: list[tuple[str, str, str, str, dict[str, Any] | None, Any]] = [
    # 500: PostgreSQL rejects an OFFSET/LIMIT past bigint (paging).
    ("users-skip-past-bigint", "admin", "GET", "/api/v1/users", {"skip": 2**64}, None),
    ("users-limit-past-bigint", "admin", "GET", "/api/v1/users", {"limit": 2**64}, None),
    ("users-skip-negative", "admin", "GET", "/api/v1/users", {"skip": -1}, None),
    # 500: PostgreSQL rejects NUL in text (NUL bytes).
    (
        "create-user-nul-in-full-name",
        "admin",
        "POST",
        "/api/v1/users",
        None,
        {"email": "nul-name@example.com", "password": "a-good-password", "full_name": "a\x00b"},
    ),
    (
        "create-user-nul-in-password",
        "admin",
        "POST",
        "/api/v1/users",
        None,
        {"email": "nul-password@example.com", "password": "a-good-\x00password"},
    ),
    (
        "api-key-nul-in-name",
        "user",
        "POST",
        "/api/v1/api-keys",
        None,
        {"name": "key\x00name"},
    ),
    # 500: a model name the upstream does not know, with max_tokens (facade and /llm).
    (
        "generate-unknown-model-with-max-tokens",
        "user",
        "POST",
        "/api/v1/llm/generate",
        None,
        {"prompt": "0", "model": "0", "max_tokens": 1, "temperature": 0.0},
    ),
    (
        "structured-empty-schema-unknown-model",
        "user",
        "POST",
        "/api/v1/llm/structured",
        None,
        {"prompt": "0", "model": "0", "max_tokens": 1, "schema": {}, "temperature": 0.0},
    ),
    (
        "stream-unknown-model-with-max-tokens",
        "user",
        "POST",
        "/api/v1/llm/stream",
        None,
        {"prompt": "0", "model": "0", "max_tokens": 1, "temperature": 0.0},
    ),
    # 500: a tool message without content, and include_usage given as 0.
    (
        "facade-tool-message-without-content",
        "user",
        "POST",
        "/v1/chat/completions",
        None,
        {
            "messages": [{"role": "tool"}],
            "model": None,
            "stream": False,
            "stream_options": {"include_usage": 0},
            "temperature": 0.0,
        },
    ),
]


@pytest.mark.parametrize(
    ("role", "method", "path", "params", "body"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_found_case_is_not_a_server_error(
    fuzz_app: RunningApp,
    role: str,
    method: str,
    path: str,
    params: dict[str, Any] | None,
    body: Any,
) -> None:
    account = fuzz_app.admin if role == "admin" else fuzz_app.user
    response = httpx.request(
        method,
        f"{fuzz_app.url}{path}",
        params=params,
        json=body,
        headers=account.headers,
        timeout=30,
    )
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert "Traceback" not in response.text
