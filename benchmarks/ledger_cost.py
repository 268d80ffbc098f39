"""What the usage ledger costs in CPU per call on SQLite: the submit path (a record opened,
filled and handed to the buffer) and the writer (rows inserted into a file database).

CPU time of the whole process (the writer's SQLite work runs in aiosqlite's thread), so
other load on the machine shifts it less than wall time. To compare two trees, run it in
each, alternately:

    python -m benchmarks.ledger_cost            # this tree
    (cd /some/other/checkout && python -m benchmarks.ledger_cost)

`--calls N --rounds R` change the defaults (20,000 calls, 5 rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

CALLS = 20_000
ROUNDS = 5


def submit_path(calls: int) -> float:
    """CPU µs per call to record one answered call."""
    from app.services.llm import ledger
    from app.services.llm.protocol import Usage

    usage = Usage(prompt_tokens=12, completion_tokens=34)
    ledger.set_caller(uuid.uuid4(), uuid.uuid4())
    started = time.process_time()
    for _ in range(calls):
        with ledger.recording("text") as record:
            record.trying("lmstudio", "llama-3.2-3b-instruct")
            record.served("lmstudio", "llama-3.2-3b-instruct", usage)
    return (time.process_time() - started) / calls * 1e6


async def measure(rounds: int, calls: int) -> tuple[list[float], list[float]]:
    """Per round: CPU µs per call to submit, and per row to write what was submitted."""
    from sqlmodel import SQLModel

    from app.core.db import dispose_engine, get_engine
    from app.services import usage_ledger

    usage_ledger.FLUSH_SECONDS = 1e9  # only the measured flushes write
    usage_ledger.FLUSH_ROWS = 10**9
    writer = usage_ledger.usage_writer
    writer.max_buffered = 10 * calls
    async with get_engine().begin() as connection:
        await connection.run_sync(SQLModel.metadata.create_all)
    submits, writes = [], []
    try:
        for _ in range(rounds):
            submits.append(submit_path(calls))
            rows = writer.pending()
            started = time.process_time()
            assert await writer.flush() == rows
            writes.append((time.process_time() - started) / rows * 1e6)
    finally:
        await writer.stop()
        await dispose_engine()
    return submits, writes


def main(argv: Sequence[str] | None = None) -> int:
    """Print the median and the minimum of each figure over the rounds."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger_cost")
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ledger-cost-") as tmp:
        os.environ["DATABASE_URL"] = f"sqlite+aiosqlite:///{Path(tmp) / 'ledger.db'}"
        submits, writes = asyncio.run(measure(args.rounds, args.calls))
    for name, values in (("submit, per call", submits), ("write, per row", writes)):
        print(f"{name:17} CPU µs: median {statistics.median(values):.2f}, min {min(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
