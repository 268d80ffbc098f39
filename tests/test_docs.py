"""Every code example in README.md and docs/*.md, tried as a new user would (issue 11).

The ```bash and ```python blocks of each document run in order, as written, against the
real server started the way `make run` starts it (`python -m app migrate`, then `python -m
app serve`) in a scratch project folder whose `.env` comes from `.env.example` with
LMSTUDIO_BASE_URL pointing at the stand-in LM Studio. The only change to a block is the
port of `http://127.0.0.1:8000`. Shell variables a block sets (TOKEN, ...) carry over to the
next blocks of the same document; Python blocks run as scripts from the project folder, as
`.venv/bin/python demo.py` would. `curl` fails on an HTTP error status here (so a 401 fails
the example), and Python blocks must leave no "Unclosed ..." or ResourceWarning on stderr.

A block that cannot run here is marked in the document with the reason, on the line before
it: `<!-- doc-test: syntax-only: <why> -->`; it is still parsed (`bash -n`, `compile`,
YAML/JSON). Runnable blocks may only name loopback addresses. A failure names the document
and the line of the block.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from app.cli import where_to_go
from app.core.config import DEFAULT_SUPERUSER_PASSWORD, Settings
from app.core.db import create_engine
from app.core.migrate import upgrade
from tests.conftest import free_port
from tests.upstream import DEFAULT_MODELS, StandInServer, unused_url

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_URL = "http://127.0.0.1:8000"
RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
PARSED_ONLY = {"yaml": "yaml", "yml": "yaml", "json": "json"}
SETTINGS_NAMES = {name.upper() for name in Settings.model_fields}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
BLOCK_TIMEOUT = 60
README_EMBEDDING_MODEL = "text-embedding-nomic-embed-text-v1.5"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<kind>[\w-]+)\s*:?\s*(?P<reason>.*?)\s*-->\s*$")
_ASSIGNED = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", re.MULTILINE)
_HOST = re.compile(r"https?://(\[[^\]]+\]|[^/:\s'\"]+)")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    syntax_only: str | None  # the reason given by a doc-test marker

    @property
    def where(self) -> str:
        """`README.md:42`, as an editor takes it."""
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether the block is executed (not only parsed)."""
        return self.language in RUNNABLE and self.syntax_only is None


def extract_blocks(document: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, indentation (list items) removed."""
    lines = document.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower()
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]
        ):
            body.append(lines[end].removeprefix(indent))
            end += 1
        assert end < len(lines), f"{document.name}:{index + 1}: the block is never closed"
        marker = _marker_before(lines, index, document)
        text = "\n".join(body) + "\n"
        blocks.append(Block(document, index + 1, language, text, marker))
        index = end + 1
    return blocks


def _marker_before(lines: list[str], fence_index: int, document: Path) -> str | None:
    before = fence_index - 1
    if before < 0:
        return None
    found = _MARKER.match(lines[before])
    if found is None:
        return None
    where = f"{document.name}:{before + 1}"
    assert found["kind"] == "syntax-only", f"{where}: unknown doc-test marker {found['kind']!r}"
    assert found["reason"], f"{where}: a syntax-only block must say why it cannot run"
    return found["reason"]


ALL_BLOCKS = [block for document in DOCUMENTS for block in extract_blocks(document)]


# ── every block parses ───────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "block",
    [b for b in ALL_BLOCKS if b.language in RUNNABLE or b.language in PARSED_ONLY],
    ids=lambda block: block.where,
)
def test_block_parses(block: Block) -> None:
    kind = RUNNABLE.get(block.language) or PARSED_ONLY[block.language]
    if kind == "python":
        try:
            compile(block.text, block.where, "exec")
        except SyntaxError as exc:
            pytest.fail(f"{block.where}: not a runnable Python script: {exc}")
    elif kind == "bash":
        checked = subprocess.run(
            ["bash", "-n"],  # noqa: S607
            input=block.text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, f"{block.where}: {checked.stderr}"
    elif kind == "yaml":
        list(yaml.safe_load_all(block.text))
    else:
        json.loads(block.text)


def test_the_documents_have_examples_that_run() -> None:
    # The extractor finds what it should: a guard against a parser that silently finds none.
    runnable = {b.where: b.language for b in ALL_BLOCKS if b.runs}
    assert sum(1 for b in ALL_BLOCKS if b.document.name == "README.md" and b.runs) >= 6, runnable
    assert sum(1 for b in ALL_BLOCKS if b.document.name == "lmstudio.md" and b.runs) >= 4, runnable
    assert {"bash", "python"} <= set(runnable.values())


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.runs], ids=lambda b: b.where)
def test_runnable_blocks_talk_to_this_machine_only(block: Block) -> None:
    hosts = set(_HOST.findall(block.text))
    assert hosts <= LOOPBACK, (
        f"{block.where} names {sorted(hosts - LOOPBACK)}: mark it "
        "`<!-- doc-test: syntax-only: <why> -->` or use the loopback address"
    )


def test_env_example_holds_every_lm_studio_setting_and_changes_no_default() -> None:
    example = ROOT / ".env.example"
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example.read_text(), re.MULTILINE)
    assert set(names) <= SETTINGS_NAMES, set(names) - SETTINGS_NAMES
    lmstudio = {n for n in SETTINGS_NAMES if n.startswith("LMSTUDIO_")}
    shared = {"LLM_PROVIDER", "LLM_RETRY_BACKOFF", "LLM_MAX_CONCURRENCY"}
    assert lmstudio | shared <= set(names), (lmstudio | shared) - set(names)
    # Copied as it is, it changes nothing: what it sets for LM Studio are the defaults.
    from_example = Settings(_env_file=example).model_dump()  # type: ignore[call-arg]
    defaults = Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
    for name in lmstudio | shared:
        assert from_example[name.lower()] == defaults[name.lower()], name


# ── the examples, run ────────────────────────────────────────────────────────


@dataclass
class Project:
    """A scratch project folder with its .env, and the server `make run` would start."""

    folder: Path
    url: str
    env: dict[str, str]
    server_log: Path


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting of the app, so .env decides."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_NAMES}
    env.update(PYTHONPATH=str(ROOT), **extra)  # the folder stands in for a clone's root
    # `python3` in the examples: any will do; the project's own is sure to be there.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONWARNINGS", None)
    return env


async def _migrate(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine=engine)
    finally:
        await engine.dispose()


def _new_project(folder: Path, upstream_url: str) -> None:
    """A clone's folder as the README leaves it: `.env` from `.env.example`, LM Studio set."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".env.example", folder / ".env.example")
    dotenv = (ROOT / ".env.example").read_text()
    dotenv, count = re.subn(
        r"^LMSTUDIO_BASE_URL=.*$", f"LMSTUDIO_BASE_URL={upstream_url}", dotenv, flags=re.M
    )
    assert count == 1, ".env.example should set LMSTUDIO_BASE_URL"
    (folder / ".env").write_text(dotenv)


@dataclass
class Server:
    """`python -m app serve` in a folder, its output kept in a file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then wait (the drain is 0 s here)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(folder: Path, env: dict[str, str]) -> Server:
    """Start the server as `make run` does, on a free loopback port; wait until it answers."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            cwd=folder,
            env={**env, "SHUTDOWN_DRAIN_SECONDS": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited early:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/api/v1/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"the server did not answer within 60 s:\n{server.output()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def project(
    upstream_server: StandInServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    """The scratch project, migrated, with its server running."""
    folder = tmp_path_factory.mktemp("clone")
    _new_project(folder, upstream_server.base_url)
    env = _clean_env()
    # What `python -m app migrate` does (tests/test_cli.py runs that command), in this process
    # to spare one start of Python; the database is the one .env names, under the folder.
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{folder / 'data' / 'app.db'}"))
    server = start_server(folder, env)
    try:
        yield Project(folder, server.url, env, server.log)
    finally:
        server.stop()


def _bash(script: str, project: Project) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        ["bash", "--noprofile", "--norc", "-c", script],  # noqa: S607
        cwd=project.folder,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


def _script_for(block: Block, project: Project, state: Path, names: list[str]) -> str:
    """The shell script that runs `block` with the variables earlier blocks set."""
    text = block.text.replace(DOCUMENTED_URL, project.url)
    saved = shlex.quote(str(state))
    prelude = [
        "set -eo pipefail",
        f"[ -f {saved} ] && source {saved}",
        # An HTTP error status fails the example (curl itself exits 0 on a 401).
        'curl() { command curl --fail-with-body --no-progress-meter --max-time 30 "$@"; }',
    ]
    if RUNNABLE[block.language] == "python":
        script_file = project.folder / f"example_{block.document.stem}_{block.line}.py"
        script_file.write_text(text)
        python = shlex.quote(sys.executable)
        body = f"PYTHONWARNINGS=default::ResourceWarning exec {python} {script_file.name}"
    else:
        body = text
    keep = f"declare -p {' '.join(names)} > {saved} 2>/dev/null || true" if names else ""
    return "\n".join([*prelude, body, keep]) + "\n"


def _report(block: Block, done: subprocess.CompletedProcess[str], why: str) -> str:
    return (
        f"{block.where}: the ```{block.language} example {why} (exit {done.returncode})\n"
        f"--- example ---\n{block.text}--- stdout ---\n{done.stdout[-3000:]}"
        f"--- stderr ---\n{done.stderr[-3000:]}"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.name)
def test_the_examples_run_in_order(
    document: Path, project: Project, upstream: StandInServer, tmp_path: Path
) -> None:
    blocks = [b for b in extract_blocks(document) if b.runs]
    # The embedding model the README saves is loaded in the stand-in, as in LM Studio.
    upstream.set_models([*DEFAULT_MODELS, README_EMBEDDING_MODEL])
    # Only .env names LM Studio (the stand-in): Python examples that reach it read .env, as
    # the server does.
    assert not any(key.upper().startswith("LMSTUDIO_") for key in project.env)
    state = tmp_path / "shell-state.sh"
    names: list[str] = []
    for block in blocks:
        if RUNNABLE[block.language] == "bash":
            names += [n for n in _ASSIGNED.findall(block.text) if n not in names]
        done = _bash(_script_for(block, project, state, names), project)
        assert done.returncode == 0, _report(block, done, "failed")
        if RUNNABLE[block.language] == "python":
            for leak in ("nclosed", "ResourceWarning", "was deleted before being closed"):
                assert leak not in done.stderr, _report(block, done, f"left {leak!r} on stderr")
    assert upstream.chat_requests, "the examples should have reached LM Studio (the stand-in)"
    if document.name == "README.md":
        assert upstream.embeddings_requests, "the embedding examples should have reached it"


# ── the login one-liner ──────────────────────────────────────────────────────

LOGIN_BLOCKS = [b for b in ALL_BLOCKS if b.runs and "/login/access-token" in b.text]


def _login(
    block: Block, project: Project, url: str, password: str
) -> subprocess.CompletedProcess[str]:
    text = block.text.replace(DOCUMENTED_URL, url)
    text = text.replace(f"password={DEFAULT_SUPERUSER_PASSWORD}", f"password={password}")
    # As typed at a prompt: no `set -e`, no curl wrapper.
    return _bash(text + 'printf "TOKEN=[%s]\\n" "$TOKEN"\n', project)


def test_the_login_one_liners_are_found() -> None:
    assert {b.document.name for b in LOGIN_BLOCKS} == {"README.md", "lmstudio.md"}


@pytest.mark.parametrize("block", LOGIN_BLOCKS, ids=lambda b: b.where)
def test_the_login_one_liner_gives_a_token_or_the_servers_reason(
    block: Block, project: Project
) -> None:
    right = _login(block, project, project.url, DEFAULT_SUPERUSER_PASSWORD)
    token = re.search(r"TOKEN=\[(.*)\]", right.stdout)
    assert token is not None, right
    assert token.group(1).count(".") == 2, right  # a JWT
    assert "Traceback" not in right.stderr, right.stderr
    if "/users/me" in block.text:
        assert '"email":"admin@example.com"' in right.stdout, right.stdout

    wrong = _login(block, project, project.url, "not-the-password")
    assert "TOKEN=[]" in wrong.stdout, wrong
    assert "Incorrect email or password" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr, wrong.stderr

    nobody = _login(block, project, unused_url().removesuffix("/v1"), DEFAULT_SUPERUSER_PASSWORD)
    assert "TOKEN=[]" in nobody.stdout, nobody
    assert "Failed to connect" in nobody.stderr, nobody.stderr
    assert "no reply from the server" in nobody.stderr, nobody.stderr
    assert "Traceback" not in nobody.stderr, nobody.stderr


# ── `make run` says where to go ──────────────────────────────────────────────


def test_make_run_prints_the_addresses_and_the_default_login(project: Project) -> None:
    output = project.server_log.read_text()
    assert f"LLM backend at {project.url}" in output, output
    assert f"{project.url}/admin/" in output, output
    assert f"{project.url}/docs" in output, output
    assert f"admin@example.com with the default password {DEFAULT_SUPERUSER_PASSWORD}" in output
    # Said before uvicorn's own lines, so it is seen first.
    assert output.index("LLM backend at") < output.index("Uvicorn running on")
    assert httpx.get(f"{project.url}/docs", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),  # noqa: S104 - every interface: this machine
        ("::", "http://[::1]:8000"),
        ("::1", "http://[::1]:8000"),
        ("llm.internal", "http://llm.internal:8000"),
    ],
)
def test_where_to_go_names_an_address_a_browser_opens(host: str, url: str) -> None:
    lines = where_to_go(host, 8000, "boss@example.com", default_login=False)
    assert lines[0] == f"LLM backend at {url}: admin page {url}/admin/, API docs {url}/docs"


def test_a_password_that_is_not_the_default_is_never_printed() -> None:
    # The configured password never reaches the banner: it only knows whether the default
    # one still logs in (first_admin_has_default_password, tests/services/test_users.py).
    assert where_to_go("127.0.0.1", 8000, "boss@example.com", default_login=False) == [
        "LLM backend at http://127.0.0.1:8000: admin page http://127.0.0.1:8000/admin/, "
        "API docs http://127.0.0.1:8000/docs",
        "Log in as boss@example.com",
    ]
    with_default = where_to_go("127.0.0.1", 8000, "boss@example.com", default_login=True)
    assert (
        f"boss@example.com with the default password {DEFAULT_SUPERUSER_PASSWORD}"
        in (with_default[1])
    )
