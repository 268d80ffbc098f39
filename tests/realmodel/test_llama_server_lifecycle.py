"""The fixture's own guarantees: a second server starts in-process and ``stop()`` frees it."""

from __future__ import annotations

import socket

import httpx
import pytest

from .llama_server import LlamaServer, LlamaServerError

pytestmark = [pytest.mark.realmodel, pytest.mark.timeout(60)]


def accepts(port: int) -> bool:
    """Whether something listens on the loopback ``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_second_server_starts_alongside_and_stops_cleanly(llama_server: LlamaServer) -> None:
    """Runs beside the session server, then frees its port; the session server keeps serving."""
    second = LlamaServer(model="second-alias", n_ctx=512)
    assert not second.running
    with second:
        assert second.running
        assert second.port != llama_server.port
        assert second.base_url == f"http://127.0.0.1:{second.port}/v1"
        models = httpx.get(f"{second.base_url}/models", trust_env=False).json()
        assert [entry["id"] for entry in models["data"]] == ["second-alias"]
        assert second.startup_seconds is not None
        port = second.port
    assert not second.running
    assert not accepts(port)
    with pytest.raises(LlamaServerError):
        _ = second.base_url
    second.stop()  # idempotent
    health = httpx.get(f"{llama_server.root_url}/health", trust_env=False)
    assert health.status_code == 200


def test_taken_port_is_a_clear_error(llama_server: LlamaServer) -> None:
    with pytest.raises(LlamaServerError, match="failed to start"):
        LlamaServer(port=llama_server.port, n_ctx=512).start()
