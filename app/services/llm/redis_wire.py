"""Just enough of Redis's protocol (RESP2) for the policy counters: commands out, replies in.

The counters need a handful of commands (EVALSHA/EVAL of their scripts), so this speaks the
wire itself rather than adding a client library: a small pool of connections per event loop,
one command in flight per connection. Only `redis://[:password@]host[:port][/db]` URLs.

Kept over redis-py because it is measurably cheaper where the policy cost is counted: the
same admission (one EVALSHA of the admit script, 2 keys) through `redis.asyncio` 8.1.0
(`register_script`, one client per loop) against this wire, alternating on one loop
against the local Redis, this 2-core machine, 2 runs of 5 rounds x 2000 admissions:
1 caller 58-62 µs (wire) vs 97-115 µs (redis-py) per admission, +40-50 µs; 50 callers
34-52 µs vs 59-70 µs, +20-25 µs. Against a goal of 0.1 ms per request for all of
accounting and limits, redis-py's pure-Python command path alone would take half of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import unquote, urlsplit

Reply = int | bytes | list["Reply"] | None
POOL_SIZE = 8
TIMEOUT = 5.0  # seconds for a connection or a reply


class RedisError(Exception):
    """Redis answered with an error, or could not be reached (the message holds no secret)."""


class RedisWire:
    """Connections to one Redis server, for the running event loop."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise RedisError("REDIS_URL must start with redis://")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._password = unquote(parts.password) if parts.password else None
        self._db = int(parts.path.lstrip("/") or 0)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(POOL_SIZE)

    async def call(self, *args: str | int | float) -> Reply:
        """Send one command; its reply (an error reply raises `RedisError`)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                async with asyncio.timeout(TIMEOUT):
                    reply = await _command(conn, args)
            except BaseException as exc:
                conn[1].close()  # its state is unknown: never reused
                if isinstance(exc, OSError | EOFError | TimeoutError):
                    where = f"{self._host}:{self._port}"
                    raise RedisError(f"Redis at {where} did not answer") from exc
                raise
            self._idle.append(conn)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def close(self) -> None:
        """Close the idle connections."""
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(TIMEOUT):
                conn = await asyncio.open_connection(self._host, self._port)
                if self._password is not None:
                    await _checked(conn, ("AUTH", self._password))
                if self._db:
                    await _checked(conn, ("SELECT", self._db))
        except (OSError, TimeoutError) as exc:
            raise RedisError(f"Redis at {self._host}:{self._port} cannot be reached") from exc
        return conn


async def _checked(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], args: tuple[str | int, ...]
) -> None:
    reply = await _command(conn, args)
    if isinstance(reply, RedisError):
        conn[1].close()
        raise reply


async def _command(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], args: tuple[str | int | float, ...]
) -> Reply | RedisError:
    reader, writer = conn
    encoded = [str(a).encode() if not isinstance(a, bytes) else a for a in args]
    out = [b"*%d\r\n" % len(encoded)]
    for part in encoded:
        out += [b"$%d\r\n" % len(part), part, b"\r\n"]
    writer.write(b"".join(out))
    await writer.drain()
    return await _reply(reader)


async def _reply(reader: asyncio.StreamReader) -> Reply | RedisError:
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return RedisError(rest.decode(errors="replace")[:200])
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        count = int(rest)
        if count < 0:
            return None
        items: list[Reply] = []
        for _ in range(count):
            item = await _reply(reader)
            if isinstance(item, RedisError):
                return item
            items.append(item)
        return items
    raise RedisError("Redis sent a reply this client does not understand")
