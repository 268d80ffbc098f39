"""Pooled clients close with their event loop: a script ending in `asyncio.run` leaves nothing
open, without calling `close_clients` (issue 11: "Unclosed client session" at exit)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.upstream import StandInServer
from tests.upstream.ollama_server import OllamaStandIn

ROOT = Path(__file__).resolve().parents[4]
OLLAMA_MODEL = "llama3.2:latest"

# The README's usage (the seed's `await get_llm_service()`, no arguments) as a plain script:
# LM Studio's and Ollama's pooled aiohttp sessions and the SQLite engine, on two loops one
# after the other, each left without closing anything. Last, a control: an aiohttp session
# the library does not own, left open on purpose, must be reported, which shows the check
# can see it.
SCRIPT = """
import asyncio

import aiohttp

from app.core.migrate import upgrade
from app.services.llm import get_llm_service, get_llm_service_with_overrides


async def main() -> None:
    llm_service = await get_llm_service()
    print(await llm_service.get_response("Explain quantum computing"))
    async for text in llm_service.stream_response("Tell me a story"):
        print(text, end="")
    print()
    ollama = await get_llm_service_with_overrides(provider="ollama")
    print(await ollama.service.get_response("hello"))


async def leave_a_session_open() -> None:
    session = aiohttp.ClientSession()
    print("control", hex(id(session)))


asyncio.run(upgrade())
asyncio.run(main())
asyncio.run(main())
asyncio.run(leave_a_session_open())
"""


@pytest.fixture(scope="module")
def ollama_upstream() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models={OLLAMA_MODEL: 131072}) as server:
        yield server


def test_a_script_ending_in_asyncio_run_leaves_nothing_unclosed(
    upstream: StandInServer, ollama_upstream: OllamaStandIn, tmp_path: Path
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("LMSTUDIO_", "OLLAMA_", "LLM_", "DATABASE_URL"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        LMSTUDIO_BASE_URL=upstream.base_url,
        LMSTUDIO_MODEL="llama-3.2-3b-instruct",
        OLLAMA_BASE_URL=ollama_upstream.base_url,
        OLLAMA_MODEL=OLLAMA_MODEL,
        PYTHONDEVMODE="",
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-W", "error::ResourceWarning", "-c", SCRIPT],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Echo: Explain quantum computing") == 2, done.stdout
    assert done.stdout.count("Echo: Tell me a story") == 2, done.stdout
    assert len(upstream.chat_requests) == 4
    assert len(ollama_upstream.chat_requests) == 2
    control = re.search(r"control (0x[0-9a-f]+)", done.stdout)
    assert control is not None, done.stdout
    # Exactly one unclosed session: the control's, reported by aiohttp at exit.
    reported = re.findall(r"Unclosed client session.*? at (0x[0-9a-f]+)>", done.stderr)
    assert reported, done.stderr
    assert set(reported) == {control.group(1)}, done.stderr
    assert "Unclosed connector" not in done.stderr, done.stderr
    assert "was deleted before being closed" not in done.stderr, done.stderr  # aiosqlite
    assert "unclosed transport" not in done.stderr, done.stderr
