"""Issue 9: hostile JSON Schemas sent to POST /api/v1/llm/structured, over real HTTP.

Each attack answers 422 (or, for a hostile reply, a clear non-500 error), nothing is fetched or
opened, the server keeps answering /api/v1/health meanwhile, and the app logs no traceback.
`HOSTILE_SCHEMAS` (with `{remote}` to fill in) and `HOSTILE_REPLIES` are exported for soak tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.llm_faults_support import ServerGuard
from tests.conftest import LLMEnv, free_port
from tests.upstream import StandInServer

Headers = dict[str, str]
URL = "/api/v1/llm/structured"
DEEP_TREE = {
    "$defs": {"node": {"type": "object", "properties": {"c": {"$ref": "#/$defs/node"}}}},
    "$ref": "#/$defs/node",
}

# (id, schema, a fragment of the 422 message). `{remote}` is replaced by a loopback URL.
HOSTILE_SCHEMAS: list[tuple[str, dict[str, Any], str]] = [
    ("http_ref", {"$ref": "{remote}/schema.json"}, "only local references"),
    ("file_ref", {"$ref": "file:///etc/passwd"}, "only local references"),
    ("dev_zero", {"$ref": "file:///dev/zero"}, "only local references"),
    ("relative_ref", {"$ref": "other.json#/x"}, "only local references"),
    ("self_ref_cycle", {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "cycle"),
    ("root_cycle", {"allOf": [{"$ref": "#"}]}, "cycle"),
    ("missing_target", {"$ref": "#/$defs/nowhere"}, "does not point to a subschema"),
    ("nested_id", {"properties": {"a": {"$id": "{remote}/x", "$ref": "y"}}}, "$id"),
    ("dynamic_ref", {"$dynamicRef": "{remote}/x#meta"}, "$dynamicRef"),
    (
        "other_draft",
        {"properties": {"a": {"$schema": "http://json-schema.org/draft-04/schema#"}}},
        "$schema",
    ),
    ("backreference", {"type": "string", "pattern": "(a)\\1"}, "RE2"),
    ("lookahead", {"patternProperties": {"(?=x)": {}}}, "RE2"),
    (
        "deep_300",
        json.loads('{"not":' * 300 + "{}" + "}" * 300),
        "nests deeper than 32 levels",
    ),
    (
        "huge",
        {"properties": {f"p{i}": {"description": "x" * 100} for i in range(1000)}},
        "larger than",
    ),
    (
        "fan_out",
        {
            "$defs": {
                **{f"a{i}": {"anyOf": [{"$ref": f"#/$defs/a{i + 1}"}] * 2} for i in range(30)},
                "a30": {"type": "string"},
            },
            "$ref": "#/$defs/a0",
        },
        "expands to more than",
    ),
]


PATTERN_SCHEMA = {
    "type": "object",
    "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
    "required": ["s"],
}
# (id, an accepted schema, what the stand-in replies, a fragment of the 422 message).
HOSTILE_REPLIES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "catastrophic_pattern",
        PATTERN_SCHEMA,
        json.dumps({"s": "a" * 5000 + "!"}),
        "does not match '^(a+)+$'",
    ),
    ("deep_reply_100", DEEP_TREE, '{"c": ' * 100 + "{}" + "}" * 100, "levels deep; at most"),
    ("deep_reply_5000", DEEP_TREE, '{"c": ' * 5000 + "{}" + "}" * 5000, "nests too deeply"),
    ("bracket_flood", DEEP_TREE, ("[" * 900 + "x") * 60, "no JSON object"),
]


def _fill(schema: dict[str, Any], remote: str) -> dict[str, Any]:
    return json.loads(json.dumps(schema).replace("{remote}", remote))  # type: ignore[no-any-return]


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request it gets: it must get none."""
    hits: list[str] = []
    handler = type("Recorder", (_Recorder,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()
    server.server_close()


async def _post_with_health(
    client: httpx.AsyncClient, headers: Headers, **request: Any
) -> httpx.Response:
    """POST the structured request; a health check sent meanwhile must be answered."""
    hostile = asyncio.create_task(client.post(URL, headers=headers, **request))
    await asyncio.sleep(0.05)
    health = await client.get("/api/v1/health")
    assert health.status_code == 200
    return await hostile


@pytest.mark.parametrize(
    ("case", "schema", "message"), HOSTILE_SCHEMAS, ids=[case for case, _, _ in HOSTILE_SCHEMAS]
)
async def test_hostile_schema_is_refused(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    no_server_errors: ServerGuard,
    remote: tuple[str, list[str]],
    case: str,
    schema: dict[str, Any],
    message: str,
) -> None:
    url, hits = remote
    response = await _post_with_health(
        client, admin_headers, json={"prompt": "x", "schema": _fill(schema, url)}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == "schema"
    assert message in detail["msg"]
    assert hits == []
    assert upstream.chat_requests == []


async def test_ref_to_the_apps_own_openapi(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    admin_headers: Headers,
    no_server_errors: ServerGuard,
) -> None:
    own = f"{client.base_url}/openapi.json"
    response = await _post_with_health(
        client, admin_headers, json={"prompt": "x", "schema": {"$ref": own}}
    )
    assert response.status_code == 422
    assert own in response.json()["detail"][0]["msg"]


async def test_file_ref_is_named_and_not_read(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    admin_headers: Headers,
    no_server_errors: ServerGuard,
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"const": "the-secret-value"}')
    ref = secret.as_uri()
    response = await client.post(
        URL, headers=admin_headers, json={"prompt": "x", "schema": {"$ref": ref}}
    )
    assert response.status_code == 422
    assert ref in response.text
    assert "the-secret-value" not in response.text


@pytest.mark.parametrize(
    ("depth", "status", "message"),
    [
        (300, 422, "the schema nests deeper than 32 levels"),
        # Past the JSON parser's own depth limit: FastAPI's answer to a body it cannot parse.
        (10_000, 400, "There was an error parsing the body"),
    ],
)
async def test_deeply_nested_body(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    admin_headers: Headers,
    no_server_errors: ServerGuard,
    depth: int,
    status: int,
    message: str,
) -> None:
    body = '{"prompt": "x", "schema": ' + '{"not": ' * depth + "{}" + "}" * depth + "}"
    response = await _post_with_health(
        client,
        admin_headers | {"Content-Type": "application/json"},
        content=body.encode(),
    )
    assert response.status_code == status, response.text
    assert message in response.text


async def test_accepted_pattern_still_validates(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
    upstream.reply_json({"s": "aaaa"})
    response = await client.post(URL, headers=admin_headers, json={"prompt": "x", "schema": schema})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"s": "aaaa"}


async def test_recursive_schema_validates_a_tree(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    tree = {"c": {"c": {"c": {}}}}
    upstream.reply_json(tree)
    response = await client.post(
        URL, headers=admin_headers, json={"prompt": "x", "schema": DEEP_TREE}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == tree
