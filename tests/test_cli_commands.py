"""The CLI's commands as a person (or a script) uses them: a real SQLite database, the
stand-in LM Studio on loopback, output read from stdout/stderr, and exit codes.

Commands run in-process (typer's CliRunner, in a thread of their own so that their
`asyncio.run` leaves the test session's event loop alone); the terminal tests start the
real program in a pseudo-terminal and read its screen through a terminal emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pexpect
import pyte
import pytest
from typer.testing import CliRunner, Result

import app.core.config as config_module
import app.core.db as db_module
from app.cli import cli
from app.core.config import Settings, set_settings
from app.core.db import dispose_engine, get_sessionmaker
from app.services.api_keys import user_for_api_key
from app.services.key_usage import KeyUsage
from app.services.llm import PROVIDERS, clear_discovery_cache
from app.services.llm.settings import invalidate_cache
from app.services.llm.structured import forget_modes
from app.services.users import authenticate
from tests.conftest import free_port
from tests.conftest import test_settings as settings_for
from tests.upstream import StandInServer, unused_url
from tests.upstream.completion import count_prompt_tokens
from tests.upstream.ollama_server import OllamaStandIn

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def _in_thread(call: Callable[[], T], timeout: float = 30) -> T:
    box: list[T] = []
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"still running after {timeout} s"
    assert box, "the call raised (see the thread's traceback above)"
    return box[0]


def invoke(*args: str, input: str | None = None) -> Result:
    """Run the CLI in-process, as `llm-backend ARGS` would, stdout and stderr apart."""
    return _in_thread(lambda: CliRunner().invoke(cli, list(args), input=input))


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run async checks against the same database, on a loop of their own."""

    async def run() -> T:
        try:
            return await make()
        finally:
            await dispose_engine()

    return _in_thread(lambda: asyncio.run(run()))


def _without_provider_env() -> dict[str, str]:
    """The environment without any provider's variables: no test reaches a real cloud."""
    prefixes = (*(f"{spec.env_prefix}_" for spec in PROVIDERS.values()), "AWS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@dataclass
class CliEnv:
    """The process's settings for one test, pointed at a migrated SQLite file."""

    database_url: str
    upstream: StandInServer

    def set(self, **overrides: Any) -> Settings:
        """Settings with these overrides (Settings field names) on top of the test's."""
        values = {
            "lmstudio_base_url": self.upstream.base_url,
            "ollama_base_url": unused_url().removesuffix("/v1"),
            "llm_timeout": 5,
            **overrides,
        }
        settings = settings_for(self.database_url, **values)
        set_settings(settings)
        invalidate_cache()
        clear_discovery_cache()
        return settings


@pytest.fixture
def cli_env(
    tmp_path: Path, upstream: StandInServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliEnv]:
    for name in set(os.environ) - set(_without_provider_env()):
        monkeypatch.delenv(name)
    # The CLI runs as in a process of its own: the session's engine (its connections belong
    # to the test session's event loop) is set aside, and back afterwards.
    monkeypatch.setattr(db_module, "_engine", None)
    monkeypatch.setattr(db_module, "_sessionmaker", None)
    previous = config_module._settings
    env = CliEnv(f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}", upstream)
    env.set()
    migrated = invoke("migrate")
    assert migrated.exit_code == 0, migrated.output
    yield env
    set_settings(previous)
    invalidate_cache()
    clear_discovery_cache()
    forget_modes()


def _tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


# ── users ────────────────────────────────────────────────────────────────────────────


def test_users_create_list_reset_password_and_deactivate(cli_env: CliEnv) -> None:
    created = invoke(
        "users", "create", "Ada@Example.com", "--full-name", "Ada L", "--json",
        input="first-password-1\nfirst-password-1\n",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    user = json.loads(created.stdout)["user"]
    assert user["email"] == "ada@example.com"
    assert (user["full_name"], user["is_active"], user["is_superuser"]) == ("Ada L", True, False)
    assert "user ada@example.com created" in created.stderr
    assert "first-password-1" not in created.output

    admin = invoke("users", "create", "root@example.com", "--admin", "--password", "root-pass-123")
    assert admin.exit_code == 0, admin.output
    assert admin.stdout == ""  # a confirmation, not data: it goes to stderr

    listed = invoke("users", "list", "--json")
    assert listed.exit_code == 0, listed.output
    users = json.loads(listed.stdout)["users"]
    assert [u["email"] for u in users] == ["ada@example.com", "root@example.com"]
    assert set(users[0]) == {"id", "email", "full_name", "is_active", "is_superuser", "created_at"}
    assert [u["is_superuser"] for u in users] == [False, True]

    plain = _tsv(invoke("users", "list").stdout)  # piped: tab-separated, a header first
    assert plain[0] == ["email", "name", "active", "admin", "created", "id"]
    assert plain[1][:4] == ["ada@example.com", "Ada L", "yes", "no"]
    assert plain[1][5] == user["id"]

    taken = invoke("users", "create", "ada@example.com", "--password", "another-pass-1")
    assert taken.exit_code == 1
    assert "a user with the email ada@example.com already exists" in taken.stderr

    short = invoke("users", "create", "bob@example.com", "--password", "short")
    assert short.exit_code == 2
    assert "password: String should have at least 8 characters" in short.output

    reset = invoke("users", "reset-password", "ada@example.com", input="second-pass-2\n" * 2)
    assert reset.exit_code == 0, reset.output
    assert "sessions are ended" in reset.stderr

    async def logins() -> tuple[bool, bool]:
        async with get_sessionmaker()() as session:
            old = await authenticate(session, "ada@example.com", "first-password-1")
            new = await authenticate(session, "ada@example.com", "second-pass-2")
            return old is not None, new is not None

    assert run_async(logins) == (False, True)

    gone = invoke("users", "deactivate", "ada@example.com", "--json")
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout)["user"]["is_active"] is False
    again = invoke("users", "deactivate", "ada@example.com")
    assert again.exit_code == 0
    assert "was already inactive" in again.stderr
    unknown = invoke("users", "deactivate", "nobody@example.com")
    assert unknown.exit_code == 1
    assert "no user with the email nobody@example.com" in unknown.stderr


# ── API keys ─────────────────────────────────────────────────────────────────────────


def test_api_keys_create_list_and_revoke(cli_env: CliEnv) -> None:
    assert invoke("users", "create", "ci@example.com", "--password", "ci-password-1").exit_code == 0

    created = invoke("api-keys", "create", "ci@example.com", "--name", "deploy bot")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key alone: KEY=$(llm-backend api-keys create …)
    assert "not shown again" in created.stderr

    async def owner(of: str) -> str | None:
        async with get_sessionmaker()() as session:
            user = await user_for_api_key(session, of)
            return user.email if user else None

    assert run_async(lambda: owner(key)) == "ci@example.com"

    as_json = invoke("api-keys", "create", "ci@example.com", "--name", "second", "--json")
    second = json.loads(as_json.stdout)
    assert second["user"] == "ci@example.com"
    assert set(second["api_key"]) == {
        "id",
        "name",
        "prefix",
        "created_at",
        "revoked_at",
        "expires_at",
        "last_used_at",
        "key",
    }
    assert second["api_key"]["key"].startswith(second["api_key"]["prefix"])

    listed = json.loads(invoke("api-keys", "list", "ci@example.com", "--json").stdout)
    keys = listed["api_keys"]
    assert [k["name"] for k in keys] == ["second", "deploy bot"]  # newest first
    assert all("key" not in k for k in keys)  # never kept, so never listed
    first = keys[1]
    assert first["prefix"] == key[:12]
    assert first["revoked_at"] is None

    revoked = invoke("api-keys", "revoke", "ci@example.com", first["id"], "--json")
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout)["api_key"]["revoked_at"] is not None
    assert run_async(lambda: owner(key)) is None
    assert "of ci@example.com revoked" in revoked.stderr
    twice = invoke("api-keys", "revoke", "ci@example.com", first["id"])
    assert twice.exit_code == 0
    assert "was already revoked" in twice.stderr
    assert run_async(lambda: owner(second["api_key"]["key"])) == "ci@example.com"

    plain = _tsv(invoke("api-keys", "list", "ci@example.com").stdout)
    assert plain[0] == ["id", "name", "prefix", "created", "revoked", "expires", "last used"]
    assert [row[1] for row in plain[1:]] == ["second", "deploy bot"]
    assert plain[1][4] == ""
    assert plain[2][4] != ""

    missing = invoke("api-keys", "revoke", "ci@example.com", str(uuid.uuid4()))
    assert missing.exit_code == 1
    assert "has no API key" in missing.stderr
    assert invoke("api-keys", "revoke", "ci@example.com", "not-a-uuid").exit_code == 2
    assert invoke("api-keys", "list", "nobody@example.com").exit_code == 1
    assert invoke("api-keys", "create", "ci@example.com", "--name", "").exit_code == 2

    assert invoke("users", "deactivate", "ci@example.com").exit_code == 0
    inactive = invoke("api-keys", "create", "ci@example.com", "--name", "late")
    assert inactive.exit_code == 1
    assert "is inactive" in inactive.stderr
    assert run_async(lambda: owner(second["api_key"]["key"])) is None  # revoked with the user


def test_api_keys_expire_when_told_and_list_expiry_and_last_use(cli_env: CliEnv) -> None:
    assert (
        invoke("users", "create", "exp@example.com", "--password", "exp-password-1").exit_code == 0
    )

    def create(name: str, expires: str) -> dict[str, Any]:
        result = invoke(
            "api-keys", "create", "exp@example.com", "--name", name, "--expires", expires, "--json"
        )
        assert result.exit_code == 0, result.output
        assert "expires 20" in result.stderr
        key: dict[str, Any] = json.loads(result.stdout)["api_key"]
        return key

    before = datetime.now(UTC)
    month = create("month", "30d")
    expires = datetime.fromisoformat(month["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    day = create("day", " 12H ")
    assert datetime.fromisoformat(day["expires_at"]) - before < timedelta(hours=12, minutes=1)
    zoned = create("zoned", "2030-01-02T03:04:05+02:00")
    assert datetime.fromisoformat(zoned["expires_at"]) == datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC)
    dated = create("dated", "2030-01-02")  # a date: its midnight, UTC
    assert datetime.fromisoformat(dated["expires_at"]) == datetime(2030, 1, 2, tzinfo=UTC)
    never = invoke("api-keys", "create", "exp@example.com", "--name", "forever")
    assert "never expires" in never.stderr

    for bad, says in (
        ("soon", "ISO 8601"),
        ("30x", "ISO 8601"),
        ("2020-01-01", "must be in the future"),
        ("0d", "must be in the future"),
        ("2000d", "5 years"),
        ("999999w", "too far ahead"),
        ("1" * 50 + "d", "ISO 8601"),
    ):
        refused = invoke("api-keys", "create", "exp@example.com", "--name", "bad", "--expires", bad)
        assert refused.exit_code == 2, (bad, refused.output)
        assert says in refused.stderr, (bad, refused.stderr)
    names = [
        k["name"]
        for k in json.loads(invoke("api-keys", "list", "exp@example.com", "--json").stdout)[
            "api_keys"
        ]
    ]
    assert "bad" not in names

    async def use(key_id: str) -> None:  # what authenticating with the key notes
        usage = KeyUsage()
        usage.used(uuid.UUID(key_id))
        await usage.drain()

    run_async(lambda: use(month["id"]))
    plain = _tsv(invoke("api-keys", "list", "exp@example.com").stdout)
    rows = {row[1]: dict(zip(plain[0], row, strict=True)) for row in plain[1:]}
    assert rows["month"]["expires"] == expires.isoformat(timespec="seconds")
    assert rows["month"]["last used"].startswith(str(datetime.now(UTC).year))
    assert rows["forever"]["expires"] == rows["forever"]["last used"] == ""
    assert rows["dated"]["expires"] == "2030-01-02T00:00:00+00:00"


def test_audit_shows_what_the_commands_changed(cli_env: CliEnv) -> None:
    created = invoke("users", "create", "audit@example.com", input="a-long-password\n" * 2)
    assert created.exit_code == 0, created.output
    assert invoke("users", "deactivate", "audit@example.com").exit_code == 0

    shown = invoke("audit", "--json")
    assert shown.exit_code == 0, shown.output
    listed = json.loads(shown.stdout)
    assert listed["count"] == 2
    events = listed["events"]
    assert [e["action"] for e in events] == ["user.deactivate", "user.create"]  # newest first
    assert events[0]["changes"] == {"is_active": [True, False]}
    assert events[0]["actor_email"] is None  # the command line
    assert "a-long-password" not in shown.stdout

    plain = _tsv(invoke("audit", "--action", "user.create").stdout)
    assert plain[0] == ["at", "actor", "action", "target", "target id", "changes"]
    assert [row[2] for row in plain[1:]] == ["user.create"]
    assert "audit@example.com" in plain[1][5]
    assert invoke("audit", "--action", "nothing").exit_code == 2
    assert invoke("audit", "--limit", "0").exit_code == 2


# ── models, settings, health ─────────────────────────────────────────────────────────


def test_models_lists_the_active_provider_or_the_one_named(cli_env: CliEnv) -> None:
    with OllamaStandIn(models={"qwen3:0.6b": 40960}) as ollama:
        cli_env.set(llm_provider="ollama", ollama_base_url=ollama.base_url, ollama_model="x")
        active = invoke("models", "--json")
        assert active.exit_code == 0, active.output
        listed = json.loads(active.stdout)
        assert listed["provider"] == "ollama"
        assert [m["id"] for m in listed["models"]] == ["qwen3:0.6b"]
        assert set(listed["models"][0]) >= {"id", "type", "state", "max_context_length"}

    named = invoke("models", "--provider", "lmstudio", "--json")
    assert named.exit_code == 0, named.output
    listed = json.loads(named.stdout)
    assert listed["provider"] == "lmstudio"
    assert listed["upstream"] == cli_env.upstream.base_url
    assert [m["id"] for m in listed["models"]] == [
        "llama-3.2-3b-instruct",
        "mistral-7b-instruct",
        "codellama-7b",
    ]

    plain = _tsv(invoke("models", "--provider", "lmstudio").stdout)
    assert plain[0] == ["id", "type", "state", "context"]
    assert plain[1] == ["llama-3.2-3b-instruct", "llm", "loaded", "131072"]
    detail = _tsv(invoke("models", "--provider", "LMStudio", "--detail").stdout)
    assert detail[0][4:] == ["publisher", "quantization", "structured output"]
    assert detail[1][4:6] == ["lmstudio-community", "Q4_K_M"]

    unknown = invoke("models", "--provider", "nope")
    assert unknown.exit_code == 2
    assert "Unknown LLM provider 'nope'; choose one of: lmstudio" in unknown.output


def test_settings_json_has_stable_keys(cli_env: CliEnv) -> None:
    saved = invoke("settings", "--lmstudio-model", "codellama-7b", "--json")
    assert saved.exit_code == 0, saved.output
    shown = json.loads(saved.stdout)
    assert set(shown) == {"source", "provider", "models", "embedding_models", "fallbacks"}
    assert set(shown["embedding_models"]) == {p.value for p in PROVIDERS}
    assert shown["source"] == "database"
    assert shown["provider"] == "lmstudio"
    assert shown["models"]["lmstudio"] == "codellama-7b"
    assert set(shown["models"]) >= {p.value for p in PROVIDERS}
    plain = _tsv(invoke("settings").stdout)
    assert plain[0] == ["setting", "value"]
    assert ["lmstudio_model", "codellama-7b"] in plain
    assert "lmstudio_embedding_model" in [row[0] for row in plain]


def test_health_reports_every_provider_and_exits_by_the_active_one(cli_env: CliEnv) -> None:
    cli_env.set(lmstudio_model="codellama-7b")
    healthy = invoke("health", "--json")
    assert healthy.exit_code == 0, healthy.output
    found = {p["provider"]: p for p in json.loads(healthy.stdout)["providers"]}
    assert set(found) == {p.value for p in PROVIDERS}
    lmstudio = found["lmstudio"]
    assert (lmstudio["active"], lmstudio["reachable"], lmstudio["model_count"]) == (True, True, 3)
    assert lmstudio["model"] == "codellama-7b"
    assert found["ollama"]["reachable"] is False  # configured, but nothing listens there
    assert "Cannot connect to Ollama" in found["ollama"]["error"]
    assert found["openai"]["configured"] is False  # no key: not asked
    assert found["openai"]["reachable"] is None

    plain = _tsv(invoke("health").stdout)
    assert plain[0][:4] == ["provider", "active", "configured", "reachable"]
    lmstudio_row = next(row for row in plain if row[0] == "lmstudio")
    assert lmstudio_row[:4] == ["lmstudio", "yes", "yes", "yes"]

    cli_env.set(lmstudio_base_url=unused_url())
    down = invoke("health")
    assert down.exit_code == 4
    cli_env.set(llm_provider="openai")
    unconfigured = invoke("health")
    assert unconfigured.exit_code == 3


# ── ask ──────────────────────────────────────────────────────────────────────────────


def test_ask_streams_the_reply_or_prints_json(cli_env: CliEnv) -> None:
    cli_env.set(lmstudio_model="codellama-7b")
    answered = invoke("ask", "hello there")
    assert answered.exit_code == 0, answered.output
    assert answered.stdout == "Echo: hello there\n"
    assert "lmstudio/codellama-7b" in answered.stderr

    as_json = invoke("ask", "hello there", "--json", "--max-tokens", "2", "--system", "be brief")
    assert as_json.exit_code == 0, as_json.output
    sent = cli_env.upstream.chat_requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert json.loads(as_json.stdout) == {
        "text": "Echo: hello",
        "provider": "lmstudio",
        "model": "codellama-7b",
        "finish_reason": "length",
        "usage": {"prompt_tokens": count_prompt_tokens(sent["messages"]), "completion_tokens": 2},
    }

    other = invoke("ask", "hi", "--model", "mistral-7b-instruct")
    assert other.exit_code == 0, other.output
    assert cli_env.upstream.chat_requests[-1].json["model"] == "mistral-7b-instruct"


def test_ask_with_a_schema_prints_validated_json(cli_env: CliEnv, tmp_path: Path) -> None:
    cli_env.set(lmstudio_model="codellama-7b")
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    schema_file = tmp_path / "city.json"
    schema_file.write_text(json.dumps(schema))
    cli_env.upstream.reply_json({"city": "Lyon", "population": 522250})
    answered = invoke("ask", "the largest city on the Rhône", "--schema", str(schema_file))
    assert answered.exit_code == 0, answered.output
    assert json.loads(answered.stdout) == {"city": "Lyon", "population": 522250}
    sent = cli_env.upstream.chat_requests[-1].json["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["required"] == ["city", "population"]

    # An invalid reply is sent back for repair; the envelope says how many attempts it took.
    cli_env.upstream.reply_json({"city": "Lyon"})
    cli_env.upstream.reply_json({"city": "Lyon", "population": 522250})
    envelope = json.loads(invoke("ask", "again", "--schema", str(schema_file), "--json").stdout)
    assert envelope["data"] == {"city": "Lyon", "population": 522250}
    assert (envelope["provider"], envelope["model"]) == ("lmstudio", "codellama-7b")
    assert envelope["attempts"] == 2
    assert envelope["mode"] == "json_schema"

    cli_env.upstream.reply_json({"city": "Lyon"}, times=None)
    never = invoke("ask", "again", "--schema", str(schema_file))
    assert never.exit_code == 5
    assert "population" in never.stderr
    cli_env.upstream.reset()

    sent_before = len(cli_env.upstream.chat_requests)
    unsafe = tmp_path / "unsafe.json"
    unsafe.write_text(json.dumps({"$ref": "https://example.com/schema.json"}))
    refused = invoke("ask", "x", "--schema", str(unsafe))
    assert refused.exit_code == 2
    assert "only local references" in refused.output
    not_json = tmp_path / "not.json"
    not_json.write_text("{nope")
    assert invoke("ask", "x", "--schema", str(not_json)).exit_code == 2
    assert invoke("ask", "x", "--schema", str(tmp_path / "absent.json")).exit_code == 2
    assert len(cli_env.upstream.chat_requests) == sent_before  # refused before asking


def test_exit_codes_tell_failures_apart(cli_env: CliEnv) -> None:
    unset = invoke("ask", "hello")
    assert unset.exit_code == 3
    assert "No LM Studio model is configured" in unset.stderr

    cli_env.set(lmstudio_model="codellama-7b")
    cli_env.upstream.fail(500, times=None)
    failing = invoke("ask", "hello")
    assert failing.exit_code == 5, failing.output
    assert failing.stdout == ""
    cli_env.upstream.reset()

    cli_env.upstream.stream_cut(after_chunks=3)
    cut = invoke("ask", "one two three four five")
    assert cut.exit_code in (4, 5), cut.output
    assert cut.stdout.startswith("Echo:")
    assert cut.stdout.endswith("\n")  # the error starts on a line of its own
    assert "error:" in cut.stderr

    cli_env.set(lmstudio_model="codellama-7b", lmstudio_base_url=unused_url())
    unreachable = invoke("ask", "hello")
    assert unreachable.exit_code == 4
    assert "Cannot connect to LM Studio" in unreachable.stderr
    assert invoke("models").exit_code == 4

    assert invoke("ask", "hello", "--provider", "nope").exit_code == 2
    assert invoke("ask", "hello", "--max-tokens", "0").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


def test_database_failures_exit_as_configuration_or_unreachable(
    cli_env: CliEnv, tmp_path: Path
) -> None:
    settings_for_unmigrated = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    set_settings(settings_for(settings_for_unmigrated))
    unmigrated = invoke("users", "list")
    assert unmigrated.exit_code == 3
    assert "python -m app migrate" in unmigrated.stderr
    # The LLM settings are read from the database too (a fresh process: nothing cached).
    env = {**_terminal_env(cli_env), "DATABASE_URL": settings_for_unmigrated}
    settings_unread = subprocess.run(
        [sys.executable, "-m", "app", "models"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert settings_unread.returncode == 3, settings_unread.stderr
    assert "The LLM settings could not be read" not in settings_unread.stderr
    assert "no such table: llmsettings: run `python -m app migrate`" in settings_unread.stderr

    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    set_settings(settings_for(dead))
    down = invoke("users", "list")
    assert down.exit_code == 4, down.output
    assert "database: cannot connect" in down.stderr
    assert "Traceback" not in down.output


# ── the real program: startup cost, console script, a terminal ───────────────────────

HEAVY_MODULES = (
    "fastapi",
    "openai",
    "sqlalchemy",
    "sqlmodel",
    "uvicorn",
    "aiobotocore",
    "pydantic",
)


def test_help_imports_nothing_heavy_and_is_fast() -> None:
    probe = (
        "import sys, json, typer.main, app.cli\n"
        "typer.main.get_command(app.cli.cli)\n"
        "try:\n"
        "    app.cli.cli(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30
    )
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout.splitlines()[-1]) == []

    def wall_time() -> float:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "app", "--help"], env=env, capture_output=True, timeout=30
        )
        assert done.returncode == 0
        return time.perf_counter() - started

    # The best of three, with room for a loaded machine (about 0.2 s on an idle one).
    assert min(wall_time() for _ in range(3)) < 1.5


def test_console_script_runs_the_cli() -> None:
    script = Path(sys.executable).with_name("llm-backend")
    done = subprocess.run(  # noqa: S603
        [str(script), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: llm-backend [OPTIONS] COMMAND")
    assert "Exit codes:" in done.stdout


SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _terminal_env(cli_env: CliEnv) -> dict[str, str]:
    return {
        **_without_provider_env(),
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": cli_env.database_url,
        "SECRET_KEY": "cli-test-secret-0123456789-0123456789",
        "LMSTUDIO_BASE_URL": cli_env.upstream.base_url,
        "LMSTUDIO_MODEL": "codellama-7b",
        "TERM": "xterm-256color",
        "COLUMNS": "100",
        "LINES": "24",
    }


def _watch(child: pexpect.spawn, screen: pyte.Screen, deadline: float) -> list[tuple[float, str]]:
    """Feed everything the program prints to the terminal emulator; the screen's text
    after every read, until the program exits."""
    stream = pyte.ByteStream(screen)
    frames: list[tuple[float, str]] = []
    try:
        while time.monotonic() < deadline:
            try:
                data = child.read_nonblocking(4096, timeout=0.05)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                break
            stream.feed(data)
            lines = (line.rstrip() for line in screen.display)
            frames.append((time.monotonic(), "\n".join(lines)))
        else:
            pytest.fail("the program did not finish in time")
    finally:
        child.close(force=True)  # reaps it (and ends it if it is still running)
    return frames


def test_ask_in_a_terminal_shows_a_spinner_then_the_text_as_it_arrives(
    cli_env: CliEnv, tmp_path: Path
) -> None:
    cli_env.upstream.slow_stream(n_chunks=12, interval=0.1, delay=0.8)
    screen = pyte.Screen(100, 24)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "app", "ask", "hi"],
        env=_terminal_env(cli_env),
        cwd=str(tmp_path),
        dimensions=(24, 100),
    )
    frames = _watch(child, screen, time.monotonic() + 60)
    assert child.exitstatus == 0, frames[-1][1] if frames else "no output"
    answer = "Echo: hi" + "".join(f" w{i}" for i in range(2, 12))

    waiting = [f for f in frames if "waiting for codellama-7b" in f[1]]
    assert waiting, "no spinner was shown"
    assert all("Echo:" not in text for _, text in waiting)  # the spinner came first
    spinner_line = next(line for line in waiting[-1][1].splitlines() if "waiting for" in line)
    assert spinner_line.strip()[0] in SPINNER_FRAMES
    assert len({text for _, text in waiting}) > 1  # it spins: the frame changes

    streaming = [(at, text) for at, text in frames if "Echo:" in text]
    partial = [(at, text) for at, text in streaming if answer not in text]
    assert len(partial) >= 3, "the text did not arrive progressively"
    lengths = [len(text.split("Echo:", 1)[1].split("\n", 1)[0]) for _, text in partial]
    assert lengths == sorted(lengths)
    assert all("waiting for" not in text for _, text in streaming)  # the spinner is gone
    assert streaming[-1][0] - partial[0][0] > 0.6  # over about 12 tokens of 0.1 s, not at once

    final = frames[-1][1]
    assert answer in final
    assert "waiting for" not in final
    assert not any(frame in final for frame in SPINNER_FRAMES)


def test_models_in_a_terminal_is_a_table(cli_env: CliEnv, tmp_path: Path) -> None:
    screen = pyte.Screen(100, 24)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "app", "models"],
        env=_terminal_env(cli_env),
        cwd=str(tmp_path),
        dimensions=(24, 100),
    )
    final = _watch(child, screen, time.monotonic() + 60)[-1][1]
    assert child.exitstatus == 0, final
    assert f"LM Studio at {cli_env.upstream.base_url}" in final
    header = next(line for line in final.splitlines() if " id " in line)
    assert header.startswith("┃")
    assert "state" in header
    assert "context" in header
    assert any(line.startswith("│ codellama-7b") for line in final.splitlines())


# ── settings: any provider's model, the fallback chain ───────────────────────────────


def test_settings_saves_any_providers_model_and_a_fallback_chain(cli_env: CliEnv) -> None:
    cli_env.set(openai_api_key="sk-test", openai_model="gpt-4o-mini", openai_base_url=unused_url())
    local_only = invoke("settings", "--model", "lmstudio=codellama-7b", "--fallback", "openai")
    assert local_only.exit_code == 3, local_only.output
    assert "would send prompts off this machine" in local_only.stderr
    assert json.loads(invoke("settings", "--json").stdout)["source"] == "environment"

    saved = invoke(
        "settings", "--model", "lmstudio=nope-7b", "--fallback", "openai",
        "--allow-cloud", "openai", "--json",
    )  # fmt: skip
    assert saved.exit_code == 0, saved.output
    shown = json.loads(saved.stdout)
    assert shown["models"]["lmstudio"] == "nope-7b"
    assert shown["fallbacks"] == [{"provider": "openai", "allow_cloud": True}]
    assert "warning: lmstudio_model 'nope-7b' was saved, but LM Studio does not offer it" in (
        saved.stderr
    )
    plain = _tsv(invoke("settings").stdout)
    assert ["fallback_providers", "openai (cloud allowed)"] in plain

    emptied = invoke("settings", "--fallback", "", "--json")
    assert json.loads(emptied.stdout)["fallbacks"] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "skynet=x"], "Unknown LLM provider 'skynet'; choose one of: lmstudio"),
        (["--model", "lmstudio"], "takes PROVIDER=NAME, not 'lmstudio'"),
        (["--fallback", "ollama,nope"], "Unknown LLM provider 'nope'"),
        (["--allow-cloud", "openai"], "goes with --fallback"),
    ],
)
def test_settings_refuses_a_bad_option_before_saving(
    cli_env: CliEnv, args: list[str], says: str
) -> None:
    refused = invoke("settings", *args)
    assert refused.exit_code == 2
    assert says in " ".join(refused.output.split())
    assert json.loads(invoke("settings", "--json").stdout)["source"] == "environment"


def test_settings_help_lists_every_provider() -> None:
    shown = invoke("settings", "--help")
    names = ", ".join(p.value for p in PROVIDERS)
    assert f"Switch to this provider: {names}" in " ".join(shown.stdout.split())


def test_usage_reports_the_ledger_written_by_library_calls(cli_env: CliEnv) -> None:
    cli_env.set(lmstudio_model="codellama-7b")
    for args in (["ask", "hello"], ["ask", "hello", "--json"]):
        answered = invoke(*args)
        assert answered.exit_code == 0, answered.output
    # Each `ask` wrote its row when its event loop ended: no server, no flush asked for.
    report = invoke("usage", "--group-by", "model", "--json")
    assert report.exit_code == 0, report.output
    body = json.loads(report.stdout)
    assert [(g["key"], g["requests"], g["errors"]) for g in body["groups"]] == [
        ("codellama-7b", 2, 0)
    ]
    assert body["totals"]["completion_tokens"] > 0

    as_table = invoke("usage", "--group-by", "provider")
    assert as_table.exit_code == 0, as_table.output
    assert _tsv(as_table.stdout)[1][:2] == ["lmstudio", "2"]

    assert invoke("usage", "--group-by", "week").exit_code == 2
    assert invoke("usage", "--since", "yesterday").exit_code == 2
    assert invoke("usage", "--since", "2026-01-02", "--until", "2026-01-01").exit_code == 2
