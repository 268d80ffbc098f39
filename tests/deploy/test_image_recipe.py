"""The image's recipe, run without Docker: the Dockerfile's own install and start commands in a
clean directory holding only what it COPYs, then readiness must answer 200.

The commands are read from the Dockerfile, so the two cannot drift apart. What differs from
an image: the interpreter is this machine's CPython 3.11 (the image's version too), the
server binds loopback instead of 0.0.0.0, and the database is a SQLite file (the migrate
step the compose file and the Kubernetes Job run is the same command).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


def uv_binary() -> str:
    """The uv that `make` installs (the Dockerfile pins the same version)."""
    for candidate in (ROOT / ".tools/bin/uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    message = "uv not found: run `make install`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def build_stage(dockerfile: str) -> list[tuple[str, str]]:
    """The build stage's COPY and RUN instructions, in order, as (instruction, argument)."""
    stage = dockerfile.split(" AS build", 1)[1].split("\nFROM ", 1)[0]
    steps = []
    for line in re.sub(r"\\\n\s*", " ", stage).splitlines():
        instruction, _, argument = line.partition(" ")
        if instruction in ("COPY", "RUN"):
            steps.append((instruction, argument.strip()))
    return steps


def stage_env(dockerfile: str, stage: str) -> dict[str, str]:
    """The ENV values set in one stage (`KEY=value` pairs; ${PATH} left to the caller)."""
    text = dockerfile.split(f" AS {stage}", 1)[1].split("\nFROM ", 1)[0]
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", text, flags=re.MULTILINE):
        for pair in shlex.split(block.replace("\\\n", " ")):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_dockerfile_install_and_start_commands_serve_a_ready_app(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = tmp_path / "app"
    workdir.mkdir()
    python = Path(getattr(sys, "_base_executable", sys.executable))
    # The machine's own settings (index, certificates, cache) stay; no trace of this venv.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        PATH=f"{Path(uv_binary()).parent}:{python.parent}:/usr/bin:/bin",
        UV_PYTHON=str(python),
        **stage_env(dockerfile, "build"),
    )
    ran = []
    for instruction, argument in build_stage(dockerfile):
        if instruction == "COPY":
            *sources, target = argument.split()
            for source in sources:
                origin = ROOT / source
                destination = (
                    workdir / target / source if target.endswith("/") else workdir / target
                )
                if origin.is_dir():
                    shutil.copytree(
                        origin, destination, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(origin, destination)
            continue
        command = shlex.split(argument)
        if command[:2] == ["pip", "install"]:
            continue  # installs uv: the test uses the same pinned uv from .tools
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{argument}\n{done.stderr}"
        ran.append(argument)
    assert any(step.startswith("uv sync --locked") for step in ran)
    assert not (workdir / ".venv/bin/pytest").exists(), "dev tools in the runtime install"

    runtime = stage_env(dockerfile, "runtime")
    runtime["PATH"] = runtime["PATH"].replace("/app/.venv", str(workdir / ".venv"))
    runtime["PATH"] = runtime["PATH"].replace("${PATH}", "/usr/bin:/bin")
    runtime.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db",
        SECRET_KEY="a-production-secret-key-of-at-least-32-characters",
        FIRST_SUPERUSER_EMAIL=ADMIN_EMAIL,
        FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )
    runtime = {**{k: v for k, v in env.items() if not k.startswith("UV_")}, **runtime}
    assert runtime["ENVIRONMENT"] == "production"
    migrated = subprocess.run(
        ["python", "-m", "app", "migrate"], cwd=workdir, env=runtime, capture_output=True
    )
    assert migrated.returncode == 0, migrated.stderr

    start = json.loads(re.findall(r"^CMD (.*)$", dockerfile, flags=re.MULTILINE)[-1])
    port = free_port()
    start[start.index("--host") + 1] = "127.0.0.1"  # tests stay on loopback
    start[start.index("--port") + 1] = str(port)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            start,
            cwd=workdir,
            env=runtime,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/health/ready", timeout=2
                ).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, log.read_text(errors="replace")
        page = httpx.get(f"http://127.0.0.1:{port}/admin/", timeout=5)
        assert page.status_code == 200, "the image serves no admin page (COPY web?)"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        # The app runs from the clean directory, not from this checkout.
        assert (
            str(workdir)
            in subprocess.run(
                [str(workdir / ".venv/bin/python"), "-c", "import app; print(app.__file__)"],
                cwd=workdir,
                env=runtime,
                capture_output=True,
                text=True,
            ).stdout
        )
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=10)
