"""The fault tier reuses the fault-matrix fixtures of tests/api (one copy of them)."""

from tests.api.conftest import llm_no_retries, no_server_errors, upstream_v04, upstreams

__all__ = ["llm_no_retries", "no_server_errors", "upstream_v04", "upstreams"]
