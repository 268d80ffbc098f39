"""What each module costs a serving worker: resident memory and import time, one by one.

Each module is imported in a fresh interpreter on top of the framework every worker needs
anyway (FastAPI, SQLAlchemy, SQLModel, uvicorn, aiohttp); the figure is the RSS it adds
(VmRSS, median of 3). `benchmarks/memory_notes.md` holds a run's figures.

    python -m benchmarks.import_cost openai alembic rich.console
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Sequence

CORE = "import fastapi, sqlalchemy.ext.asyncio, sqlmodel, pydantic, uvicorn, aiohttp"
_MEASURE = """
import gc, importlib, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) / 1024
{core}
gc.collect(); before = rss(); started = time.perf_counter()
for name in {names!r}:
    importlib.import_module(name)
took = time.perf_counter() - started; gc.collect()
print(rss() - before, took * 1000)
"""


def cost(names: Sequence[str], rounds: int = 3) -> tuple[float, float]:
    """MiB and milliseconds that importing `names` adds to the core (medians)."""
    runs = []
    for _ in range(rounds):
        code = _MEASURE.format(core=CORE, names=list(names))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        done.check_returncode()
        mib, ms = (float(part) for part in done.stdout.split())
        runs.append((mib, ms))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main(argv: Sequence[str] | None = None) -> None:
    """Print one markdown row per argument (`a+b` imports both together)."""
    print("| module | MiB | import ms |\n|---|---:|---:|")
    for spec in argv if argv is not None else sys.argv[1:]:
        mib, ms = cost(spec.split("+"))
        print(f"| `{spec}` | {mib:.1f} | {ms:.0f} |")


if __name__ == "__main__":
    main()
