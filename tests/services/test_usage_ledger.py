"""The usage ledger for library calls, fallback chains, a full buffer and a clean shutdown."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel, SecretStr
from sqlalchemy import insert
from sqlmodel import col, select

from app.core.config import LLMProvider
from app.core.db import get_engine, get_sessionmaker
from app.models import UsageEntry
from app.services import usage_ledger
from app.services.llm import FallbackService, LMStudioConfig, OpenRouterConfig, ProviderService
from app.services.llm.ledger import CallRecord, LedgerEntry
from app.services.llm.providers import PROVIDERS
from app.services.usage_ledger import DROPPED, UsageWriter, delete_expired, usage_writer
from tests.conftest import LLMEnv, serve_app
from tests.upstream import StandInServer, unused_url
from tests.upstream.openrouter_server import OpenRouterStandIn

KEY = "sk-or-test"
MODEL = "llama-3.2-3b-instruct"


class City(BaseModel):
    name: str


@pytest.fixture(scope="module")
def openrouter_server() -> Iterator[OpenRouterStandIn]:
    with OpenRouterStandIn(api_key=KEY) as server:
        yield server


def lmstudio(base_url: str, model: str) -> ProviderService:
    config = LMStudioConfig(base_url=base_url, default_model=model, max_retries=1)
    return ProviderService(PROVIDERS[LLMProvider.LMSTUDIO], config, retry_backoff=0)


def openrouter(server: OpenRouterStandIn, model: str) -> ProviderService:
    config = OpenRouterConfig(
        base_url=server.base_url, api_key=SecretStr(KEY), default_model=model, max_retries=0
    )
    return ProviderService(PROVIDERS[LLMProvider.OPENROUTER], config, retry_backoff=0)


async def rows_since(moment: datetime) -> list[UsageEntry]:
    """The ledger's rows of calls made since `moment`, after writing what is buffered."""
    await usage_writer.flush()
    async with get_sessionmaker()() as session:
        result = await session.exec(
            select(UsageEntry)
            .where(col(UsageEntry.created_at) >= moment)
            .order_by(col(UsageEntry.id))
        )
        return list(result.all())


async def test_library_calls_each_record_one_row_without_a_caller(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    started = datetime.now(UTC)
    service = lmstudio(upstream.base_url, MODEL)
    upstream.reply("plain")
    assert await service.get_response("hi") == "plain"
    upstream.invalid_json(kind="prose")
    upstream.reply_json({"name": "Oslo"})
    assert (await service.get_structured_response("city?", City)).name == "Oslo"
    upstream.reply("a streamed reply")
    assert "".join([t async for t in service.stream_response("hi")]) == "a streamed reply"
    upstream.slow_stream(n_chunks=20, interval=0.01)
    chunks = service.stream_chunks([{"role": "user", "content": "hi"}])
    async for chunk in chunks:
        if chunk.text:
            break
    await chunks.aclose()  # the caller stops reading
    upstream.fail(500, times=None)
    with pytest.raises(Exception, match="500"):
        await service.get_response("hi")
    upstream.reset()

    rows = await rows_since(started)
    assert [(r.kind, r.outcome) for r in rows] == [
        ("text", "ok"),
        ("structured", "ok"),
        ("stream", "ok"),
        ("stream", "cancelled"),
        ("text", "llm_upstream_error"),
    ]
    assert {(r.user_id, r.api_key_id, r.provider, r.model) for r in rows} == {
        (None, None, "lmstudio", MODEL)
    }
    assert rows[1].prompt_tokens > rows[0].prompt_tokens  # two attempts summed
    assert all(r.completion_tokens > 0 for r in rows[:3])


async def test_a_fallback_chain_is_one_row_naming_who_served_it_with_its_cost(
    llm_env: LLMEnv, openrouter_server: OpenRouterStandIn
) -> None:
    openrouter_server.reset()
    started = datetime.now(UTC)
    chain = FallbackService([lmstudio(unused_url(), MODEL), openrouter(openrouter_server, MODEL)])
    openrouter_server.reply("from the cloud", cost=0.25)
    assert await chain.get_response("hi") == "from the cloud"
    openrouter_server.reply("streamed from the cloud", cost=0.5)
    assert "".join([t async for t in chain.stream_response("hi")]) == "streamed from the cloud"

    rows = await rows_since(started)
    assert [(r.kind, r.provider, r.outcome, r.cost) for r in rows] == [
        ("text", "openrouter", "ok", 0.25),
        ("stream", "openrouter", "ok", 0.5),
    ]


async def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    writer = UsageWriter(max_buffered=3)
    before = DROPPED._value.get()
    for _ in range(5):
        writer.submit(CallRecord("text").entry())
    assert writer.pending() == 3
    assert DROPPED._value.get() - before == 2
    task = writer._task
    assert task is not None
    task.cancel()
    writer._task = None


async def test_buffered_rows_are_written_on_a_clean_shutdown(
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await usage_writer.stop()
    monkeypatch.setattr(usage_ledger, "FLUSH_SECONDS", 3600.0)  # only the shutdown writes
    started = datetime.now(UTC)
    llm_env.set(lmstudio_model=MODEL)
    running = await serve_app()
    try:
        async with httpx.AsyncClient(base_url=running.base_url) as client:
            for _ in range(4):
                upstream.reply("hi")
                response = await client.post(
                    "/api/v1/llm/generate", json={"prompt": "x"}, headers=admin_headers
                )
                assert response.status_code == 200, response.text
        assert usage_writer.pending() >= 4
    finally:
        await running.stop()
    assert usage_writer.pending() == 0
    rows = await rows_since(started)
    assert [(r.kind, r.outcome, r.model) for r in rows] == [("text", "ok", MODEL)] * 4


async def test_retention_deletes_only_rows_older_than_the_setting(llm_env: LLMEnv) -> None:
    started = datetime.now(UTC)
    old, recent = CallRecord("text"), CallRecord("text")
    old.at = (started - timedelta(days=91)).timestamp()
    old.provider = recent.provider = "lmstudio"
    old.model, recent.model = "retention-old", "retention-recent"
    for record in (old, recent):
        record.finish(None)
    await usage_writer.flush()
    assert await delete_expired(0) == 0  # 0 keeps everything
    assert await delete_expired(90) >= 1
    async with get_sessionmaker()() as session:
        result = await session.exec(
            select(UsageEntry.model).where(col(UsageEntry.model).startswith("retention-"))
        )
        assert list(result.all()) == ["retention-recent"]


async def test_a_flush_writes_what_was_buffered_not_what_keeps_arriving(llm_env: LLMEnv) -> None:
    inserts: list[int] = []

    class Arriving(UsageWriter):
        async def _insert(self, batch: list[LedgerEntry]) -> None:
            if not inserts:
                self._rows.append(CallRecord("text").entry())  # a call ends meanwhile
            inserts.append(len(batch))
            await super()._insert(batch)

    writer = Arriving()
    writer._rows.extend(CallRecord("text").entry() for _ in range(3))
    assert await writer.flush() == 3
    assert inserts == [3]  # one INSERT; the newcomer waits for the next flush
    assert writer.pending() == 1


@pytest.mark.parametrize("scratch_databases", ["sqlite"], indirect=True)
async def test_sqlite_rows_are_stored_exactly_as_sqlalchemy_stores_them(llm_env: LLMEnv) -> None:
    """The writer binds SQLite's values itself (cheaper than SQLAlchemy's per-row
    processing): they must be what SQLAlchemy would have written, which reports compare
    and group as text."""
    model = f"format-{uuid.uuid4().hex[:8]}"
    entries: list[LedgerEntry] = [
        (
            time.time(),
            uuid.uuid4().int,
            uuid.uuid4().int,
            "text",
            "lmstudio",
            model,
            "ok",
            3,
            4,
            12.34567,
            0.25,
        ),
        (
            1767225600.0,
            None,
            None,
            "json_stream",
            "openrouter",
            model,
            "cancelled",
            0,
            0,
            0.0,
            None,
        ),  # a whole second: SQLAlchemy still writes the microseconds
        (
            1767225600.000001,
            1,
            None,
            "k" * 20,
            "p" * 40,
            model + "m" * 300,
            "o" * 70,
            1,
            2,
            1e-4,
            1e-9,
        ),  # what the columns cannot hold is cut to fit
    ]
    async with get_engine().connect() as connection:
        await connection.execute(insert(UsageEntry), [usage_ledger._row(e) for e in entries])
        await connection.commit()
    writer = UsageWriter()
    writer._rows.extend(entries)
    assert await writer.flush() == len(entries)
    async with get_engine().connect() as connection:
        raw = (
            await connection.exec_driver_sql(
                "SELECT created_at, user_id, api_key_id, kind, provider, model, outcome, "
                "prompt_tokens, completion_tokens, latency_ms, cost, typeof(created_at), "
                "typeof(latency_ms) FROM usage WHERE model LIKE ? ORDER BY id",
                (f"{model}%",),
            )
        ).all()
    by_sqlalchemy, by_writer = raw[: len(entries)], raw[len(entries) :]
    assert by_writer == by_sqlalchemy
    assert by_writer[1][0] == "2026-01-01 00:00:00.000000"


async def test_the_buffered_gauge_reads_the_buffer(llm_env: LLMEnv) -> None:
    await usage_writer.stop()
    usage_writer._rows.extend(CallRecord("text").entry() for _ in range(3))
    assert REGISTRY.get_sample_value("usage_rows_buffered") == usage_writer.pending() == 3
    await usage_writer.flush()
    assert REGISTRY.get_sample_value("usage_rows_buffered") == 0
