"""Counting what a request may leave behind: asyncio tasks, checked-out database connections,
open connections to an upstream. The app under test serves in the test's own process and
event loop (tests/conftest.py), so all three are visible from here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psutil

from app.core.db import get_engine


@dataclass(frozen=True)
class Resources:
    """What is held at one moment."""

    tasks: int
    db_checked_out: int
    upstream_connections: int

    def within(self, baseline: Resources) -> bool:
        """True when nothing grew past `baseline`."""
        return (
            self.tasks <= baseline.tasks
            and self.db_checked_out <= baseline.db_checked_out
            and self.upstream_connections <= baseline.upstream_connections
        )


def snapshot(upstream_ports: set[int]) -> Resources:
    """Tasks alive in this loop, connections the app's pool lent out, and TCP connections
    from this process to any of `upstream_ports` (the app's side of each)."""
    tasks = sum(1 for task in asyncio.all_tasks() if not task.done())
    pool = get_engine().pool
    checked_out = int(getattr(pool, "checkedout", lambda: 0)())
    connections = sum(
        1
        for conn in psutil.Process().net_connections("tcp")
        if conn.raddr and conn.raddr.port in upstream_ports and conn.status == "ESTABLISHED"
    )
    return Resources(tasks, checked_out, connections)


async def settled(baseline: Resources, upstream_ports: set[int], seconds: float = 3.0) -> Resources:
    """Poll until nothing is held beyond `baseline` (closing takes a few loop turns); the last
    snapshot either way, for the caller to assert on."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        now = snapshot(upstream_ports)
        if now.within(baseline) or asyncio.get_running_loop().time() > deadline:
            return now
        await asyncio.sleep(0.05)
