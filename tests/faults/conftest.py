"""The fault tier reuses the fault-matrix fixtures of tests/api (one copy of them)."""

import pytest

from tests.api.conftest import llm_no_retries, no_server_errors, upstream_v04, upstreams

__all__ = ["llm_no_retries", "no_server_errors", "upstream_v04", "upstreams"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Upstream faults do not depend on the database backend: run them once, on PostgreSQL
    (whose pool is the one that can leak a checked-out connection), to keep `make test` short."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        backend = params.params.get("scratch_databases") if params else None
        if item.path.name == "test_upstream_faults.py" and backend == "sqlite":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
