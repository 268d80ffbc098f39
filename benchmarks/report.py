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
ORDER = ("direct", "facade", "llm-api", "litellm")
LABELS = {
    "direct": "direct to upstream (floor)",
    "facade": "ours: `/v1/chat/completions`",
    "llm-api": "ours: `/api/v1/llm/generate` · `/stream`",
    "litellm": "LiteLLM proxy",
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


def failed(cell: dict[str, Any]) -> str:
    """The requests of a run that did not complete, and why (errors include timeouts)."""
    count = cell.get("failed", cell["errors"])
    parts = [
        f"{cell[key]} {label}"
        for key, label in (("timeouts", "timed out"), ("unfinished", "unfinished"))
        if cell.get(key)
    ]
    return f"**{count}** ({', '.join(parts)})" if parts else f"**{count}**" if count else "0"


def rate(cell: dict[str, Any], digits: int = 0) -> str:
    """Completed requests per second; a run where none completed says so."""
    if not cell["requests"]:
        return "**none completed**"
    return f"{cell['rps']:.{digits}f}"


def non_stream_table(result: dict[str, Any]) -> str:
    """Latency, added latency over direct, throughput and errors per level and target."""
    lines = [
        "| clients | target | p50 ms | p95 ms | p99 ms | added p50 ms | added p99 ms "
        "| req/s | failed |",
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
                f"{_ms(cell['p99'])} | {added} | {added99} | {rate(cell)} | {failed(cell)} |"
            )
    return "\n".join(lines)


def stream_table(result: dict[str, Any]) -> str:
    """Time to first token, per-chunk cost and jitter per level and target."""
    lines = [
        "| clients | target | TTFT p50 ms | added TTFT p50 ms | TTFT p99 ms | added per chunk ms "
        "| gap p99 ms | jitter (stdev of gaps) ms | streams/s | failed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, row in result["stream"].items():
        floor = row["direct"]
        for name in _targets(row):
            cell = row[name]
            chunks = max(cell.get("tokens_min") or 1, 2) - 1
            after_first = (cell["p50"] - cell["ttft_p50"]) - (floor["p50"] - floor["ttft_p50"])
            added_ttft = "" if name == "direct" else _ms(cell["ttft_p50"] - floor["ttft_p50"])
            per_chunk = (
                "" if name == "direct" or math.isnan(after_first) else f"{after_first / chunks:.3f}"
            )
            lines.append(
                f"| {level} | {LABELS[name]} | {_ms(cell['ttft_p50'])} | {added_ttft} | "
                f"{_ms(cell['ttft_p99'])} | {per_chunk} | {_ms(cell['gap_p99'])} | "
                f"{_ms(cell['jitter'])} | {rate(cell, 1)} | {failed(cell)} |"
            )
    return "\n".join(lines)


def ratios(result: dict[str, Any]) -> list[str]:
    """The headline comparisons, each measured side by side in this run."""
    found: list[str] = []
    rows = result["non_stream"]
    for level, row in rows.items():
        if "litellm" in row and not row["litellm"]["requests"]:
            found.append(
                f"{level} clients: LiteLLM completed no request ({failed(row['litellm'])} "
                "failed); no ratio"
            )
        if "litellm" in row and row["litellm"]["requests"]:
            found.append(
                f"{level} clients: facade throughput {row['facade']['rps']:.0f} req/s = "
                f"**{row['facade']['rps'] / row['litellm']['rps']:.1f} x** LiteLLM's "
                f"{row['litellm']['rps']:.0f}; added p50 "
                f"{row['facade']['p50'] - row['direct']['p50']:.2f} ms "
                f"vs LiteLLM {row['litellm']['p50'] - row['direct']['p50']:.2f} ms"
            )
    return found


_CALLS = {
    "create": "`chat.completions.create` (typed)",
    "post": "`client.post(..., cast_to=object)` (what ours used before its own client)",
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


def client_table(result: dict[str, Any]) -> str:
    """The upstream client alone: the SDK's raw path against ours, µs per call."""
    lines = [
        "| clients | call | SDK µs/call | ours µs/call | SDK CPU µs/call | ours CPU µs/call "
        "| CPU ratio |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    cells = result.get("client_floor", {})
    for key, sdk in cells.items():
        client, kind, level = key.split()
        ours = cells.get(f"ours {kind} {level}")
        if client != "sdk" or ours is None:
            continue
        lines.append(
            f"| {level.removeprefix('c=')} | {kind} | {sdk['wall_us']:.0f} | {ours['wall_us']:.0f} "
            f"| {sdk['cpu_us']:.0f} | {ours['cpu_us']:.0f} "
            f"| {sdk['cpu_us'] / ours['cpu_us']:.1f} x |"
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


def _verdict(ok: bool | None) -> str:
    return "**not measured**" if ok is None else "met" if ok else "**not met**"


def _completed(row: dict[str, Any], *names: str) -> bool:
    return all(name in row and row[name]["requests"] for name in names)


def knee_line(result: dict[str, Any]) -> str:
    """Where throughput stops growing, in a sentence."""
    knee = result.get("knee")
    if not knee or knee.get("knee") is None:
        return "no knee: the sweep completed no request"
    return (
        f"knee at {_clients(knee['knee'])} ({knee['knee_rps']:.0f} req/s, >= "
        f"{100 * KNEE_SHARE:.0f} % of the sweep's best {knee['best_rps']:.0f}); added p99 "
        f"{knee['added_p99_below']:.2f} ms at {_clients(knee['below'])}"
    )


def _clients(count: int) -> str:
    return f"{count} client" if count == 1 else f"{count} clients"


def knee_table(result: dict[str, Any]) -> str:
    """The facade and direct at rising concurrency (the sweep that finds the knee)."""
    lines = [
        "| clients | direct req/s | facade req/s | direct p99 ms | facade p99 ms "
        "| added p50 ms | added p99 ms | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, row in result.get("knee", {}).get("levels", {}).items():
        direct, facade = row["direct"], row["facade"]
        lines.append(
            f"| {level} | {rate(direct)} | {rate(facade)} | {_ms(direct['p99'])} "
            f"| {_ms(facade['p99'])} | {_ms(facade['p50'] - direct['p50'])} "
            f"| {_ms(facade['p99'] - direct['p99'])} | {failed(facade)} |"
        )
    return "\n".join(lines)


def structured_target(structured: dict[str, Any] | None) -> tuple[str, bool | None]:
    """This run's share of valid structured replies (ours, every model) and the verdict."""
    if structured is None:
        return "not run (--skip-structured or --quick)", None
    runs = structured.get("models") or [structured]  # one report, or one per model
    figures, verdicts = [], []
    for run in runs:
        share = run.get("verdict", {}).get("ours_valid_share")
        model = run.get("settings", {}).get("model", "?")
        if share is None:
            figures.append(f"{model}: no figure")
            verdicts.append(None)
            continue
        figures.append(f"{model}: {100 * share:.1f} %")
        verdicts.append(share >= STRUCTURED_VALID)
    ok = None if None in verdicts else all(verdicts)
    return "; ".join(figures), ok


STRUCTURED_VALID = 0.99
KNEE_SHARE = 0.9  # as benchmarks.latency.KNEE_SHARE (not imported: report runs without it)


def targets(
    result: dict[str, Any],
    structured: dict[str, Any] | None = None,
    accuracy: dict[str, Any] | None = None,
) -> str:
    """Every goal of the issue for one worker, each with this run's figure and a verdict.

    A goal whose figure this run could not produce (a target that completed nothing, a part
    skipped) is **not measured**, never met.
    """
    rows = ["| goal | this run | verdict |", "|---|---|---|"]

    def add(name: str, figure: str, ok: bool | None) -> None:
        rows.append(f"| {name} | {figure} | {_verdict(ok)} |")

    def none_completed(row: dict[str, Any], *names: str) -> str:
        if not row:
            return "level not in this run"
        return "; ".join(
            f"{LABELS[name]} completed none ({failed(row[name])} failed)"
            if name in row
            else f"{LABELS[name]} not run"
            for name in names
            if not _completed(row, name)
        )

    non_stream = result["non_stream"]
    row = non_stream.get("1", {})
    name = "sequential added latency p50 <= 0.5 ms"
    if _completed(row, "facade", "direct"):
        added = row["facade"]["p50"] - row["direct"]["p50"]
        add(name, f"{added:.2f} ms", added <= 0.5)
    else:
        add(name, none_completed(row, "facade", "direct"), None)
    row = non_stream.get("50", {})
    if _completed(row, "facade"):
        rps = row["facade"]["rps"]
        add("50 clients: >= 2,000 req/s", f"{rps:.0f} req/s", rps >= 2000)
    else:
        add(
            "50 clients: >= 2,000 req/s",
            none_completed(row, "facade"),
            None,
        )
    name = "50 clients: >= 20x LiteLLM's req/s"
    if _completed(row, "facade", "litellm"):
        times = row["facade"]["rps"] / row["litellm"]["rps"]
        add(name, f"{times:.1f}x ({row['litellm']['rps']:.0f} req/s)", times >= 20)
    elif "litellm" not in row:
        add(name, "LiteLLM not run (--skip-litellm)", None)
    else:
        add(name, none_completed(row, "facade", "litellm"), None)
    name = "added p99 < 5 ms below saturation; the knee"
    knee = result.get("knee")
    if knee and knee.get("knee") is not None:
        at50 = ""
        if _completed(row, "facade", "direct"):
            at50 = f"; at 50 clients {row['facade']['p99'] - row['direct']['p99']:.2f} ms"
        add(name, knee_line(result) + at50, knee["added_p99_below"] < 5)
    else:
        add(name, knee_line(result) if knee else "no knee sweep", None)
    stream = result["stream"]
    row = stream.get("1", {})
    name = "streams: added time to first token p50 < 2 ms"
    if _completed(row, "facade", "direct"):
        ttft = row["facade"]["ttft_p50"] - row["direct"]["ttft_p50"]
        add(name, f"{ttft:.2f} ms", ttft < 2)
        chunks = max(row["facade"]["tokens_min"], 2) - 1
        after = (row["facade"]["p50"] - row["facade"]["ttft_p50"]) - (
            row["direct"]["p50"] - row["direct"]["ttft_p50"]
        )
        add("streams: < 0.05 ms added per chunk", f"{after / chunks:.3f} ms", after / chunks < 0.05)
    else:
        add(name, none_completed(row, "facade", "direct"), None)
    memory = result["memory"]
    idle = memory.get("idle_mib", {}).get("ours")
    if idle is None:
        add("RSS idle < 100 MiB", "not measured", None)
    else:
        add("RSS idle < 100 MiB", f"{idle:.0f} MiB", idle < 100)
    held = memory.get("held_streams", {}).get("ours")
    streams = memory.get("held_streams", {}).get("streams", "?")
    name = f"{streams} open streams with RSS < 300 MB"
    if held:
        held_mb = held["held_mib"] * 2**20 / 1e6
        add(
            name,
            f"{held_mb:.0f} MB ({held['open']} open, {held['errors']} failed)",
            held_mb < 300 and held["errors"] == 0 and held["open"] == streams,
        )
    else:
        add(name, "not measured", None)
    figure, ok = structured_target(structured)
    add(f"structured output: ours >= {100 * STRUCTURED_VALID:.0f} % valid", figure, ok)
    for name, (figure, ok) in accuracy_targets(accuracy).items():
        add(name, figure, ok)
    return "\n".join(rows)


def accuracy_targets(accuracy: dict[str, Any] | None) -> dict[str, tuple[str, bool | None]]:
    """The labelled set's two goals (ours, every model) with figures and verdicts."""
    valid_goal = f"labelled set: ours >= {100 * STRUCTURED_VALID:.0f} % valid on every model"
    ahead_goal = "labelled set: ours' fields right ahead of instructor on every task class"
    verdict = (accuracy or {}).get("verdicts", {}).get("ours")
    if not verdict:
        return {valid_goal: ("not run", None), ahead_goal: ("not run", None)}
    valid = ", ".join(f"{m} {100 * v:.1f} %" for m, v in verdict["valid_share"].items())
    behind = "; ".join(
        f"{g['model']} {g['task_class']}: {100 * (g['ours'] or 0):.1f} vs "
        f"{100 * (g['instructor'] or 0):.1f} %"
        for g in verdict["not_ahead"]
    )
    ahead = f"not ahead on {behind}" if behind else "ahead on every class"
    return {valid_goal: (valid, verdict["valid_met"]), ahead_goal: (ahead, verdict["ahead_met"])}


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


def memory_notes() -> list[str]:
    """`memory_notes.md` (where an idle worker's memory goes), without its comment header."""
    path = HERE / "memory_notes.md"
    if not path.exists():
        return []
    return [path.read_text().split("-->", 1)[-1].strip(), ""]


def write(
    latency: dict[str, Any],
    structured_md: str | None,
    profile_md: str | None,
    measured: datetime | None = None,
    serving_md: str | None = None,
    structured: dict[str, Any] | None = None,
    floors_md: str | None = None,
    accuracy: dict[str, Any] | None = None,
    policy_md: str | None = None,
) -> Path:
    """Write RESULTS.md and the plot; return the RESULTS.md path (`policy_md`: the section
    on what accounting and limits cost, left out when None)."""
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
        f"in one run; each level runs {plan['duration']:g} s "
        f"({plan.get('one_client_stream_factor', 3) * plan['duration']:g} s for one "
        f"client's streams) after a {plan['warmup']:g} s warm-up. Note the machine has 2 "
        "cores shared by upstream, load generator and "
        "gateway, so absolute throughput is a floor of what a dedicated core gives.",
        "",
        "## Targets (one worker)",
        "",
        "Streaming targets are read at 1 client; the per-level figures are below. A goal "
        "this run could not measure (a part skipped, a target that completed nothing) is "
        "*not measured*, never met.",
        "",
        targets(latency, structured, accuracy),
        "",
        "## Non-streaming chat completions",
        "",
        "*failed*: requests of the measured window that did not complete: errors (an HTTP "
        f"error, a broken or error-ending stream, no answer within "
        f"{plan.get('request_timeout', 60):g} s: *timed out*) and requests in flight for the "
        "whole window (*unfinished*). A row where nothing completed says so.",
        "",
        non_stream_table(latency),
        "",
        *[f"- {line}" for line in ratios(latency)],
        "",
        "### The knee",
        "",
        "The facade and direct at rising concurrency, "
        f"{plan.get('knee_duration', 1):g} s each: throughput grows with clients until the "
        "worker is saturated; past that, more clients only queue (latency grows, "
        f"throughput does not). The knee is the fewest clients reaching {100 * KNEE_SHARE:.0f} "
        "% of the best throughput; *below saturation* is the level before it.",
        "",
        knee_table(latency),
        "",
        f"- {knee_line(latency)}",
        "",
        *(
            [
                "### The floors: the same server doing (almost) nothing",
                "",
                "`benchmarks/floor.py`: bare ASGI apps under uvicorn with `serve`'s settings, "
                "measured in the same run: a constant reply (the server's own cost) and a bare "
                "aiohttp relay to the upstream (no auth, validation, retries, metrics or logs: "
                "the least any Python gateway on this server adds). Ours minus the relay is "
                "what those features cost.",
                "",
                floors_md,
                "",
            ]
            if floors_md
            else []
        ),
        *(["## What accounting and limits cost", "", policy_md, ""] if policy_md else []),
        "## The `openai` SDK alone",
        "",
        "One process calling the SDK on the same upstream, no gateway: the most a single-core "
        "gateway built on the official SDK can serve that way.",
        "",
        sdk_table(latency),
        "",
        "## The upstream client alone",
        "",
        "The SDK's raw path (`client.post`, aiohttp transport) and ours (`OpenAIWire`: aiohttp "
        "and orjson directly) in one process, alternately, on the same upstream (streams: 20 "
        "chunks at no pace); µs per call is wall time, CPU is the client process's.",
        "",
        client_table(latency),
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
        *memory_notes(),
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
    structured_path = out / "structured_quality.json"
    structured = json.loads(structured_path.read_text()) if structured_path.exists() else None
    structured_md = structured_quality.to_markdown(structured) if structured else None
    accuracy_path = out / "structured_accuracy.json"
    accuracy = json.loads(accuracy_path.read_text()) if accuracy_path.exists() else None
    if structured_md and accuracy:
        from benchmarks import structured_accuracy

        structured_md += "\n\n" + structured_accuracy.section(accuracy)
    profile = out / "profile.md"
    serving = out / "serving.json"
    serving_md = None
    if serving.exists():
        from benchmarks import serving as serving_bench

        serving_md = serving_bench.to_markdown(json.loads(serving.read_text()))
    measured = datetime.fromtimestamp((out / "latency.json").stat().st_mtime, UTC)
    floors = out / "floors.md"
    policy = out / "policy_cost.json"
    policy_md = None
    if policy.exists():
        from benchmarks import policy_cost

        policy_md = policy_cost.to_markdown(json.loads(policy.read_text()))
    print(
        write(
            latency,
            structured_md,
            profile.read_text() if profile.exists() else None,
            measured,
            serving_md,
            structured,
            floors.read_text() if floors.exists() else None,
            accuracy,
            policy_md,
        )
    )


if __name__ == "__main__":
    main()
