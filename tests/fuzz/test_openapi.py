"""Schemathesis against the running app's own OpenAPI document, over a real socket.

Every operation, as the admin and as a normal user, through the examples, coverage and
fuzzing phases, then the stateful phase (sequences that follow the API's links, e.g. create a
user then read, update and deactivate it). Fixed seed, bounded examples: the tier takes about
a minute. Checks: no server error (5xx), and every response conforms to the document
(status code, content type, body schema).

A case this tier finds stays in `test_regressions.py` as a plain request, so the fix keeps
being checked whatever the fuzzer happens to generate next time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from app.core.config import set_settings
from app.main import create_app
from benchmarks.processes import ROOT
from tests import conftest as shared
from tests.fuzz.checks import no_server_error
from tests.running_app import Account, RunningApp

SEED = 20261130
# Per operation and role in the fuzzing phase; FUZZ_EXAMPLES=200 for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
STATEFUL_SCENARIOS = max(10, MAX_EXAMPLES)
STATEFUL_STEPS = 8

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "allow-x00": True},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
        },
        "request-timeout": 30,
    }
)


def _document() -> dict[str, Any]:
    """The OpenAPI document the app builds (checked below to be the one it serves).

    Loaded at import, because schemathesis's lazy loader (`from_fixture`) no longer works
    with this pytest (it writes `Node._nodeid`, gone in pytest 9.2).
    """
    set_settings(shared.test_settings("sqlite+aiosqlite://"))
    try:
        return create_app().openapi()
    finally:
        set_settings(None)


DOCUMENT = _document()
api_schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def test_the_fuzzed_document_is_the_one_the_app_serves(fuzz_app: RunningApp) -> None:
    """The fuzzer works from exactly what the running app publishes."""
    served = httpx.get(f"{fuzz_app.url}/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@pytest.fixture(scope="session")
def victim_id(fuzz_app: RunningApp) -> Iterator[str]:
    """A disposable user that cases aimed at the fuzzer's own accounts are sent to."""
    with httpx.Client(base_url=fuzz_app.url, timeout=30) as client:
        created = client.post(
            "/api/v1/users",
            json={"email": "victim@example.com", "password": "victim-password"},
            headers=fuzz_app.admin.headers,
        )
        created.raise_for_status()
        yield created.json()["id"]


def spare_the_fuzzer(case: Case, app: RunningApp, victim: str) -> None:
    """Aim a case that would update or deactivate the fuzzer's own accounts at the victim.

    Changing the admin's own password or email, or deactivating the normal user, would lock
    the rest of the run out (every later case a 401): the same request goes to a user nobody
    logs in as, so it is still sent and still checked.
    """
    params = case.path_parameters or {}
    if params.get("user_id") in (app.admin.id, app.user.id):
        params["user_id"] = victim


# What the issue asks for: no 5xx, and no response that contradicts the document (its content
# type, headers and body schema). Left out on purpose: `status_code_conformance` (the document
# declares only 2xx and 422 per route, so every 401/403/404 would "fail"; reported to the lead),
# `use_after_free` (DELETE /users/{id} deactivates, by design the user stays readable), and
# `positive_data_acceptance` (a schema-valid body may still be refused with a clear 400, e.g.
# switching to OpenAI without a model).
CHECKS = [
    no_server_error,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def call_as(account: Account, case: Case, app: RunningApp, victim: str) -> None:
    """Send the case with the account's token and run the checks."""
    spare_the_fuzzer(case, app, victim)
    case.call_and_validate(base_url=app.url, headers=account.headers, timeout=30, checks=CHECKS)


@api_schema.parametrize()
def test_as_admin(case: Case, fuzz_app: RunningApp, victim_id: str) -> None:
    """Every operation as the first admin."""
    call_as(fuzz_app.admin, case, fuzz_app, victim_id)


@api_schema.parametrize()
def test_as_user(case: Case, fuzz_app: RunningApp, victim_id: str) -> None:
    """Every operation as a normal user (admin routes must answer 403, never 5xx)."""
    call_as(fuzz_app.user, case, fuzz_app, victim_id)


@pytest.mark.parametrize("role", ["admin", "user"])
def test_stateful(fuzz_app: RunningApp, victim_id: str, role: str, tmp_path: Path) -> None:
    """Sequences of calls along the document's links (create a user, then read, update and
    deactivate it; create an API key, then delete it ...), as each role.

    Run by schemathesis's own engine (its CLI): Hypothesis's state machine under pytest
    calls a live API "flaky" as soon as a replayed step meets the state an earlier one left.
    """
    account = fuzz_app.admin if role == "admin" else fuzz_app.user
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"""
seed = {SEED}
hooks = "tests.fuzz.st_hooks"
request-timeout = 30

[generation]
max-examples = {STATEFUL_SCENARIOS}
database = "none"
allow-x00 = true

[phases.stateful]
max-steps = {STATEFUL_STEPS}
"""
    )
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{fuzz_app.url}/openapi.json",
        "--phases",
        "stateful",
        "--checks",
        ",".join(check.__name__ for check in CHECKS),
        "--header",
        f"Authorization: Bearer {account.token}",
        "--no-color",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FUZZ_PROTECTED_IDS": f"{fuzz_app.admin.id},{fuzz_app.user.id}",
        "FUZZ_VICTIM_ID": victim_id,
    }
    run = subprocess.run(  # noqa: S603 - our own command line
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
