"""A serving worker loads only what serving needs: the memory of every idle worker.

The real `python -m app serve` (one worker, SQLite, LM Studio = the stand-in) answers the
hot routes (facade, `/api/v1/llm/*`, a stream), a login and the readiness probe; then it
lists its own modules. What only `migrate`, the shell commands, PostgreSQL or another
provider use must not be among them (`benchmarks/memory_notes.md` has what each costs).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.processes import Gateway
from tests.upstream import StandInServer

pytestmark = pytest.mark.timeout(120)

MODEL = "llama-3.2-3b-instruct"

# Module (or package) → who alone should load it.
NOT_FOR_SERVING = {
    "alembic": "`migrate` (readiness reads revisions without it)",
    "mako": "Alembic",
    "asyncpg": "a DATABASE_URL on PostgreSQL",
    "sqlalchemy.dialects.postgresql": "a DATABASE_URL on PostgreSQL",
    "rich": "the shell commands' output",
    "pygments": "rich and Alembic",
    "websockets": "WebSocket routes (there are none)",
    "openai": "nothing: our OpenAI wire speaks HTTP itself (the SDK is a dev dependency)",
    "httpx2": "the openai SDK",
    "botocore": "the Bedrock provider, when it is used",
    "aiobotocore": "the Bedrock provider, when it is used",
}

# `python -m app serve`, with SIGUSR1 writing the loaded modules to $MODULES_TO.
_SERVE = """
import os, signal, sys
def dump(*_):
    with open(os.environ["MODULES_TO"] + ".part", "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
    os.replace(os.environ["MODULES_TO"] + ".part", os.environ["MODULES_TO"])
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["app", "serve", "--port", sys.argv[1], "--no-access-log"]
from app.cli import main
main()
"""


def loaded_modules(gateway: Gateway, path: Path) -> set[str]:
    """Every module the serving process has imported so far."""
    os.kill(gateway.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, "the server did not list its modules"
        time.sleep(0.05)
    return set(path.read_text().split())


def test_serving_imports_nothing_it_does_not_use(upstream: StandInServer, tmp_path: Path) -> None:
    modules_to = tmp_path / "modules.txt"
    os.environ["MODULES_TO"] = str(modules_to)  # inherited by the server process
    try:
        with Gateway(
            upstream.base_url, MODEL, serve=[sys.executable, "-c", _SERVE, "{port}"]
        ) as gateway:
            with httpx.Client(base_url=gateway.url, headers=gateway.headers, timeout=30) as client:
                chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
                client.post("/v1/chat/completions", json=chat).raise_for_status()
                client.post("/api/v1/llm/generate", json={"prompt": "Hi"}).raise_for_status()
                with client.stream(
                    "POST", "/v1/chat/completions", json={**chat, "stream": True}
                ) as stream:
                    stream.raise_for_status()
                    assert b"[DONE]" in b"".join(stream.iter_bytes())
                client.get("/api/v1/health/ready").raise_for_status()
            loaded = loaded_modules(gateway, modules_to)
    finally:
        del os.environ["MODULES_TO"]

    assert {"app.main", "aiosqlite", "sqlalchemy.dialects.sqlite"} <= loaded  # it did serve
    unwanted = {
        name: why
        for name, why in NOT_FOR_SERVING.items()
        if any(module == name or module.startswith(name + ".") for module in loaded)
    }
    assert not unwanted, f"serving imported {unwanted}"
