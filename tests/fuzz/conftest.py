"""The app in its own process on PostgreSQL, with the stand-in as LM Studio, for the fuzzer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.running_app import AppProcess, RunningApp
from tests.upstream import StandInServer


@pytest.fixture(scope="session")
def fuzz_upstream() -> Iterator[StandInServer]:
    """A stand-in of the fuzz tier's own (the session's one is reset by other tests)."""
    with StandInServer() as server:
        yield server


@pytest.fixture(scope="session")
def fuzz_app(
    fuzz_upstream: StandInServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningApp]:
    """The real app on a fresh PostgreSQL database (NUL bytes and DB errors show there)."""
    with AppProcess("postgres", fuzz_upstream, Path(tmp_path_factory.mktemp("fuzz"))) as app:
        yield app
