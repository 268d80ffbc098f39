"""ThreadedApp: the shared lifecycle of the provider stand-ins."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from aiohttp import web

from .threaded import ThreadedApp

pytestmark = pytest.mark.timeout(10)


class _Hello(ThreadedApp):
    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._hello)
        return app

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(text="hello")


class _Broken(ThreadedApp):
    def build_app(self) -> web.Application:
        raise ValueError("no app today")


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
        return str(reply.read().decode())


def test_serves_until_stopped_and_starts_again() -> None:
    server = _Hello()
    with server:
        port = server.port
        assert port
        assert _get(port) == "hello"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    with server.start():
        assert _get(server.port) == "hello"
    server.stop()
    server.stop()  # a second stop is a no-op


def test_a_server_that_cannot_start_says_so() -> None:
    server = _Broken()
    with pytest.raises(RuntimeError, match="_Broken did not start") as caught:
        server.start()
    assert isinstance(caught.value.__cause__, ValueError)
    server.stop()
