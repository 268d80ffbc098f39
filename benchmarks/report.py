"""Turn a benchmark run into `benchmarks/RESULTS.md` and `benchmarks/latency.png`."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORDER = ("direct", "facade", "llm-api", "litellm", "facade-httpx")
LABELS = {
    "direct": "direct to upstream (floor)",
    "facade": "ours: `/v1/chat/completions`",
    "llm-api": "ours: `/api/v1/llm/generate` · `/stream`",
    "litellm": "LiteLLM proxy",
    "facade-httpx": "ours, SDK on httpx transport",
}


def machine() -> str:
    """One line describing where the figures were measured."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; fastapi {version('fastapi')}, uvicorn "
        f"{version('uvicorn')}, openai {version('openai')}, aiohttp {version('aiohttp')}"
    )


def _ms(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _targets(row: dict[str, Any]) -> list[str]:
    return [name for name in ORDER if name in row]


def non_stream_table(result: dict[str, Any]) -> str:
    """Latency, added latency over direct, throughput and errors per level and target."""
    lines = [
        "| clients | target | p50 ms | p95 ms | p99 ms | added p50 ms | added p99 ms "
        "| req/s | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, row in result["non_stream"].items():
        floor = row["direct"]
        for name in _targets(row):
            cell = row[name]
            added = "" if name == "direct" else _ms(cell["p50"] - floor["p50"])
            added99 = "" if name == "direct" else _ms(cell["p99"] - floor["p99"])
            lines.append(
                f"| {level} | {LABELS[name]} | {_ms(cell['p50'])} | {_ms(cell['p95'])} | "
                f"{_ms(cell['p99'])} | {added} | {added99} | {cell['rps']:.0f} | {cell['errors']} |"
            )
    return "\n".join(lines)


def stream_table(result: dict[str, Any]) -> str:
    """Time to first token, per-chunk cost and jitter per level and target."""
    lines = [
        "| clients | target | TTFT p50 ms | added TTFT p50 ms | TTFT p99 ms | added per chunk ms "
        "| gap p99 ms | jitter (stdev of gaps) ms | streams/s | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, row in result["stream"].items():
        floor = row["direct"]
        for name in _targets(row):
            cell = row[name]
            chunks = max(cell.get("tokens_min") or 1, 2) - 1
            after_first = (cell["p50"] - cell["ttft_p50"]) - (floor["p50"] - floor["ttft_p50"])
            added_ttft = "" if name == "direct" else _ms(cell["ttft_p50"] - floor["ttft_p50"])
            per_chunk = "" if name == "direct" else f"{after_first / chunks:.3f}"
            lines.append(
                f"| {level} | {LABELS[name]} | {_ms(cell['ttft_p50'])} | {added_ttft} | "
                f"{_ms(cell['ttft_p99'])} | {per_chunk} | {_ms(cell['gap_p99'])} | "
                f"{_ms(cell['jitter'])} | {cell['rps']:.1f} | {cell['errors']} |"
            )
    return "\n".join(lines)


def ratios(result: dict[str, Any]) -> list[str]:
    """The headline comparisons, each measured side by side in this run."""
    found: list[str] = []
    rows = result["non_stream"]
    for level, row in rows.items():
        if "litellm" in row and row["litellm"]["rps"]:
            found.append(
                f"{level} clients: facade throughput {row['facade']['rps']:.0f} req/s = "
                f"**{row['facade']['rps'] / row['litellm']['rps']:.1f} x** LiteLLM's "
                f"{row['litellm']['rps']:.0f}; added p50 "
                f"{row['facade']['p50'] - row['direct']['p50']:.2f} ms "
                f"vs LiteLLM {row['litellm']['p50'] - row['direct']['p50']:.2f} ms"
            )
        if "facade-httpx" in row and row["facade-httpx"]["rps"]:
            found.append(
                f"{level} clients: SDK on aiohttp vs httpx transport: "
                f"{row['facade']['rps'] / row['facade-httpx']['rps']:.2f} x the throughput, "
                f"p50 {row['facade']['p50']:.2f} vs {row['facade-httpx']['p50']:.2f} ms"
            )
    return found


_CALLS = {
    "create": "`chat.completions.create` (typed)",
    "post": "`client.post(..., cast_to=object)` (what ours uses)",
}


def sdk_table(result: dict[str, Any]) -> str:
    """The SDK on its own: calls per second per transport and concurrency."""
    lines = [
        "| clients | transport | call | calls/s | p50 ms | p99 ms | µs per call |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in result.get("sdk_floor", []):
        lines.append(
            f"| {row['concurrency']} | {row['transport']} | {_CALLS[row['call']]} "
            f"| {row['rps']:.0f} | {_ms(row['p50'])} "
            f"| {_ms(row['p99'])} | {row['us_per_call'] or float('nan'):.0f} |"
        )
    return "\n".join(lines)


def memory_table(result: dict[str, Any]) -> str:
    """RSS idle, after the load, and with many streams held open."""
    memory = result["memory"]
    held = memory.get("held_streams", {})
    lines = [
        "| process | RSS idle MiB | RSS after the load above MiB "
        f"| RSS with {held.get('streams', '?')} open streams MiB | streams opened | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("ours", "litellm"):
        if name not in memory.get("idle_mib", {}):
            continue
        hold = held.get(name, {})
        lines.append(
            f"| {'ours (1 worker)' if name == 'ours' else 'LiteLLM proxy (1 worker)'} | "
            f"{memory['idle_mib'][name]:.0f} | {memory['after_load_mib'][name]:.0f} | "
            f"{hold.get('held_mib', float('nan')):.0f} | {hold.get('open', 0)} | "
            f"{hold.get('errors', 0)} |"
        )
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets(result: dict[str, Any]) -> str:
    """The issue's targets for one worker, each with this run's figure and a verdict."""
    rows = ["| target | this run | verdict |", "|---|---|---|"]

    def add(name: str, figure: str, ok: bool) -> None:
        rows.append(f"| {name} | {figure} | {_verdict(ok)} |")

    non_stream = result["non_stream"]
    if "1" in non_stream:
        row = non_stream["1"]
        added = row["facade"]["p50"] - row["direct"]["p50"]
        add("sequential added latency p50 <= 0.5 ms", f"{added:.2f} ms", added <= 0.5)
    if "50" in non_stream:
        row = non_stream["50"]
        added50 = row["facade"]["p50"] - row["direct"]["p50"]
        added99 = row["facade"]["p99"] - row["direct"]["p99"]
        add("50 clients: added p50 < 1 ms", f"{added50:.2f} ms", added50 < 1)
        add("50 clients: added p99 < 5 ms", f"{added99:.2f} ms", added99 < 5)
        rps = row["facade"]["rps"]
        add("50 clients: >= 2,000 req/s", f"{rps:.0f} req/s", rps >= 2000)
        if "litellm" in row and row["litellm"]["rps"]:
            times = rps / row["litellm"]["rps"]
            add("50 clients: >= 20x LiteLLM's req/s", f"{times:.1f}x", times >= 20)
    stream = result["stream"]
    if "1" in stream:
        row = stream["1"]
        ttft = row["facade"]["ttft_p50"] - row["direct"]["ttft_p50"]
        add("streams: added time to first token p50 < 2 ms", f"{ttft:.2f} ms", ttft < 2)
        chunks = max(row["facade"]["tokens_min"], 2) - 1
        after = (row["facade"]["p50"] - row["facade"]["ttft_p50"]) - (
            row["direct"]["p50"] - row["direct"]["ttft_p50"]
        )
        add("streams: < 0.05 ms added per chunk", f"{after / chunks:.3f} ms", after / chunks < 0.05)
    memory = result["memory"]
    idle = memory["idle_mib"]["ours"]
    add("RSS idle < 100 MiB", f"{idle:.0f} MiB", idle < 100)
    held = memory.get("held_streams", {}).get("ours")
    if held:
        held_mb = held["held_mib"] * 2**20 / 1e6
        add(
            f"{memory['held_streams']['streams']} open streams with RSS < 300 MB",
            f"{held_mb:.0f} MB ({held['open']} open, {held['errors']} errors)",
            held_mb < 300 and held["errors"] == 0,
        )
    return "\n".join(rows)


def plot(result: dict[str, Any], path: Path) -> None:
    """Latency distributions (non-streaming, and time to first token) per target and level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(result["non_stream"])
    figure, axes = plt.subplots(2, len(levels), figsize=(5 * len(levels), 8), squeeze=False)
    for column, level in enumerate(levels):
        for row_index, (kind, key, title) in enumerate(
            (
                ("non_stream", "samples", "request latency"),
                ("stream", "ttft_samples", "time to first token"),
            )
        ):
            axis = axes[row_index][column]
            row = result[kind][level]
            names = _targets(row)
            data = [row[name][key] or [math.nan] for name in names]
            axis.boxplot(data, whis=(1, 99), showfliers=False)
            axis.set_xticks(range(1, len(names) + 1), names, rotation=20)
            axis.set_yscale("log")
            axis.set_ylabel("ms (log)")
            axis.set_title(f"{title}, {level} concurrent")
            axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Boxes: p25 to p75, line: p50, whiskers: p1 to p99")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(
    latency: dict[str, Any],
    structured_md: str | None,
    profile_md: str | None,
    measured: datetime | None = None,
    serving_md: str | None = None,
) -> Path:
    """Write RESULTS.md and the plot; return the RESULTS.md path."""
    plot(latency, HERE / "latency.png")
    plan = latency["plan"]
    sections = [
        "# Benchmark results",
        "",
        f"Measured {measured or datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on: "
        f"{machine()}.",
        "",
        "Everything runs on loopback, each part in its own process: the upstream (a minimal "
        "OpenAI-compatible server, `benchmarks/upstream.py`), the load generator "
        "(`benchmarks/loadgen.py`, aiohttp + uvloop, closed loop), our service "
        "(`python -m app serve`, one worker, SQLite, API-key auth, access log off) and the "
        "LiteLLM proxy (1 worker, no database, master key, its own venv). All targets answer "
        "the same request from the same upstream at the same concurrency, one after another "
        f"in one run; each level runs {plan['duration']:g} s ({3 * plan['duration']:g} s for one "
        f"client's streams) after a {plan['warmup']:g} s warm-up. Note the machine has 2 "
        "cores shared by upstream, load generator and "
        "gateway, so absolute throughput is a floor of what a dedicated core gives.",
        "",
        "## Targets (one worker)",
        "",
        "Streaming targets are read at 1 client; the per-level figures are below.",
        "",
        targets(latency),
        "",
        "## Non-streaming chat completions",
        "",
        non_stream_table(latency),
        "",
        *[f"- {line}" for line in ratios(latency)],
        "",
        "## The `openai` SDK alone",
        "",
        "One process calling the SDK on the same upstream, no gateway: the most a single-core "
        "gateway built on the official SDK can serve that way.",
        "",
        sdk_table(latency),
        "",
        "## Streaming",
        "",
        "The upstream streams 20 chunks, one every 20 ms. *Added per chunk* is the extra time "
        "between the first and the last token compared with direct, divided by the chunks "
        "after the first.",
        "",
        stream_table(latency),
        "",
        "## Memory",
        "",
        memory_table(latency),
        "",
        "![latency distributions](latency.png)",
        "",
    ]
    if serving_md:
        sections += ["## Serving: workers, servers, settings propagation", "", serving_md, ""]
        if (HERE / "serving_notes.md").exists():
            notes = (HERE / "serving_notes.md").read_text().split("-->", 1)[-1].strip()
            sections += [notes, ""]
    if structured_md:
        sections += ["## Structured output on a real model", "", structured_md, ""]
    sections += ["## Profile-driven fixes", ""]
    for name in ("profile_fixes.md", "before_after.md"):
        if (HERE / name).exists():
            sections += [(HERE / name).read_text().strip(), ""]
    if profile_md:
        sections += ["### Profile now (py-spy, facade, 50 clients)", "", profile_md, ""]
    path = HERE / "RESULTS.md"
    path.write_text("\n".join(sections))
    return path


def main() -> None:
    """Re-render RESULTS.md and the plot from the last run's files in `benchmarks/out/`
    (after editing `before_after.md` or `profile_fixes.md`, say)."""
    import json

    from benchmarks import structured_quality

    out = HERE / "out"
    latency = json.loads((out / "latency.json").read_text())
    structured = out / "structured_quality.json"
    structured_md = (
        structured_quality.to_markdown(json.loads(structured.read_text()))
        if structured.exists()
        else None
    )
    accuracy = out / "structured_accuracy.json"
    if structured_md and accuracy.exists():
        from benchmarks import structured_accuracy

        structured_md += "\n\n" + structured_accuracy.section(json.loads(accuracy.read_text()))
    profile = out / "profile.md"
    serving = out / "serving.json"
    serving_md = None
    if serving.exists():
        from benchmarks import serving as serving_bench

        serving_md = serving_bench.to_markdown(json.loads(serving.read_text()))
    measured = datetime.fromtimestamp((out / "latency.json").stat().st_mtime, UTC)
    print(
        write(
            latency,
            structured_md,
            profile.read_text() if profile.exists() else None,
            measured,
            serving_md,
        )
    )


if __name__ == "__main__":
    main()
