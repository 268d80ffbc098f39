"""Sample our gateway with py-spy while it serves 50 concurrent facade requests.

Prints (and returns as markdown) the functions where the serving thread spends its time,
self and inclusive, as shares of the samples taken in the event loop's thread.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.latency import CHAT_BODY, MODEL
from benchmarks.processes import ROOT, Gateway, Upstream

# Inclusive time is shown for our code and the few library layers a request crosses.
WATCHED = (
    "(app/api/openai_compat.py)",
    "(app/api/deps.py)",
    "(app/services/llm/calls.py)",
    "(app/services/llm/providers/openai_compatible.py)",
    "(app/services/llm/factory.py)",
    "(app/services/llm/settings.py)",
    "(openai/_base_client.py)",
    "(fastapi/dependencies/utils.py)",
    "(uvicorn/protocols/http/httptools_impl.py)",
)


def _frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0]})"


def summarize(raw: Path, top: int = 15) -> str:
    """Markdown lists of the top self and inclusive frames in a py-spy raw profile."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("Runner.run" in f for f in frames):
            continue  # other threads (aiosqlite's, the thread pool) idle most of the time
        samples = int(count)
        total += samples
        own[_frame(frames[-1])] += samples
        for name in {_frame(f) for f in frames}:
            if name.endswith(WATCHED):
                inclusive[name] += samples
    if not total:
        return "(no samples)"
    lines = [f"{total} samples of the event-loop thread.", "", "Self time:", ""]
    lines += [f"- {100 * n / total:.1f} % `{name}`" for name, n in own.most_common(top)]
    lines += ["", "Inclusive time (our code and the layers a request crosses):", ""]
    lines += [f"- {100 * n / total:.1f} % `{name}`" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def profile(seconds: float = 5.0) -> str:
    """Run the load, sample the gateway, return the markdown summary."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with (
        Upstream() as upstream,
        Gateway(upstream.base_url, MODEL) as gateway,
        tempfile.TemporaryDirectory() as tmp,
    ):
        command = [sys.executable, "-m", "benchmarks.loadgen"]
        command += ["--url", f"{gateway.url}/v1/chat/completions", "--concurrency", "50"]
        command += ["--duration", str(seconds + 2), "--warmup", "0"]
        command += ["--body", __import__("json").dumps(CHAT_BODY)]
        for name, value in gateway.headers.items():
            command += ["--header", f"{name}: {value}"]
        load = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        time.sleep(1.0)
        raw = Path(tmp) / "profile.txt"
        sampled = subprocess.run(
            [
                py_spy,
                "record",
                "-p",
                str(gateway.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(raw),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        load.wait(timeout=60)
        if sampled.returncode != 0 or not raw.exists():
            return f"(py-spy could not sample: {sampled.stderr.strip()[:300]})"
        return summarize(raw)


if __name__ == "__main__":
    print(profile())
