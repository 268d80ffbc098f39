"""Our gateway at an earlier commit vs the working tree, side by side in one run.

    python -m benchmarks.before_after a0ff2f6     # writes benchmarks/before_after.md

The earlier commit is checked out into a temporary git worktree and served with this
venv; both gateways answer the same upstream, driven by the same load generator, target
after target at each level. `make bench` copies the file into RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.latency import CHAT_BODY, MODEL, Plan, run_load, summarize
from benchmarks.processes import ROOT, Gateway, Upstream

OUTPUT = Path(__file__).resolve().parent / "before_after.md"


def compare(commit: str, plan: Plan) -> str:
    """Markdown table: p50/p99 and req/s of both gateways on the facade, per level."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", commit],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lines = [
        f"Facade (`/v1/chat/completions`), one worker each, before = commit `{sha}`, after = "
        "this tree; same upstream and load generator, measured alternately in one run.",
        "",
        "| clients | version | p50 ms | p99 ms | req/s | errors |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), sha],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        try:
            with (
                Upstream() as upstream,
                Gateway(upstream.base_url, MODEL, root=tree) as before,
                Gateway(upstream.base_url, MODEL) as after,
            ):
                for level in plan.levels:
                    for name, gateway in ((f"before ({sha})", before), ("after", after)):
                        url = f"{gateway.url}/v1/chat/completions"
                        cell = summarize(
                            run_load(url, gateway.headers, CHAT_BODY, level, plan), stream=False
                        )
                        lines.append(
                            f"| {level} | {name} | {cell['p50']:.2f} | {cell['p99']:.2f} | "
                            f"{cell['rps']:.0f} | {cell['errors']} |"
                        )
                        print(lines[-1], flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare, print and write `benchmarks/before_after.md`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__)
        return 2
    table = compare(args[0], Plan(levels=(1, 50, 200), duration=4.0))
    OUTPUT.write_text(table + "\n")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
