"""Fixtures shared by the fault-matrix tests of /api/v1/llm and the /v1 facade."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.llm_faults_support import MODEL, ServerGuard, Upstreams, server_guard
from tests.conftest import LLMEnv
from tests.upstream import StandInServer


@pytest.fixture
def no_server_errors(client: httpx.AsyncClient) -> Iterator[ServerGuard]:
    """Fails the test on any 500, traceback in a body, or error logged by the app."""
    with server_guard(client) as guard:
        yield guard


@pytest.fixture(scope="module")
def upstream_v04() -> Iterator[StandInServer]:
    """A second stand-in speaking LM Studio 0.4's error wording."""
    with StandInServer(lmstudio_version="0.4") as server:
        yield server


@pytest.fixture
def upstreams(
    llm_env: LLMEnv, upstream: StandInServer, upstream_v04: StandInServer
) -> Iterator[Upstreams]:
    """Both stand-ins, reset, with the env handle the fault table arranges through."""
    upstream_v04.reset()
    yield Upstreams(llm_env, upstream, upstream_v04)
    upstream_v04.reset()


@pytest.fixture
def llm_no_retries(llm_env: LLMEnv) -> LLMEnv:
    """The stand-in's model configured, with retries off so faults surface at once."""
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    return llm_env
