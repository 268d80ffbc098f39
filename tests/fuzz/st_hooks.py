"""Hooks for the schemathesis CLI run of the stateful phase (loaded via SCHEMATHESIS_HOOKS).

The same two rules as test_openapi.py's pytest cases: a 5xx is accepted only when it names
an upstream fault, and a case aimed at the fuzzer's own accounts goes to a disposable user.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.hooks import HookContext

from tests.fuzz.checks import no_server_error as _no_server_error


@schemathesis.check
def no_server_error(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No 5xx but an upstream fault named as such (see test_openapi.no_server_error)."""
    return _no_server_error(ctx, response, case)


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    """Aim cases at the fuzzer's own accounts at the victim instead."""
    protected = set(os.environ.get("FUZZ_PROTECTED_IDS", "").split(","))
    params = case.path_parameters or {}
    if params.get("user_id") in protected:
        params["user_id"] = os.environ["FUZZ_VICTIM_ID"]
