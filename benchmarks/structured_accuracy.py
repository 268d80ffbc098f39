"""Structured output, from valid to right: the labelled set, scored field by field.

Every task of `benchmarks.structured_labelled` (36 tasks whose right values are known, in
three classes) is answered by ours, instructor and naive ``json_object`` — the three
approaches of `benchmarks.structured_quality`, with its settings (temperature 0, seed 42,
256 tokens, a budget of 4 validated attempts) — on two small models served by llama.cpp
(xllamacpp, in process): SmolLM2-135M-Instruct and Gemma 3 270M. Each (model, approach)
gets a freshly started server, one at a time (llama.cpp's prompt cache would otherwise
give the second approach a latency discount).

A reply is scored with `benchmarks.structured_scoring`: an invalid one has every field
wrong. The table gives, per model and task class, valid % and fields right % (and all
fields right %, mean attempts, p50 latency), then two verdicts:

* structured valid ≥ 99 % on both models (ours, over the whole set);
* fields right ahead of instructor on every task class, on both models (strictly more).

``--variant NAME`` adds one of `benchmarks.structured_ideas`' variants of ours (an idea
tried on the ladder), run like a fourth approach; ``--model`` picks one model.

Run ``.venv/bin/python -m benchmarks.structured_accuracy`` (or ``python -m benchmarks
structured``) from the repository root; it prints markdown and writes
``benchmarks/out/structured_accuracy.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import LLMProvider, Settings, get_settings, set_settings
from app.services.llm.providers.clients import close_clients
from benchmarks import structured_ideas
from benchmarks.structured_labelled import LABELLED_CLASSES, LABELLED_TASKS, LabelledTask
from benchmarks.structured_quality import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    Record,
    percent,
    run_instructor,
    run_naive,
    run_ours,
)
from benchmarks.structured_scoring import score_fields, summarise_scores
from benchmarks.venvs import ROOT
from tests.realmodel.llama_server import (
    DEFAULT_ALIAS,
    DEFAULT_THREADS,
    GEMMA3_ALIAS,
    LlamaServer,
    gemma3_model_path,
    model_path,
)

APPROACHES = ("ours", "instructor", "naive")
OUTPUT = ROOT / "benchmarks" / "out" / "structured_accuracy.json"
TARGET_VALID_SHARE = 0.99


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A small model the benchmark serves: its alias and where its GGUF file is."""

    alias: str
    path: Callable[[], Path]


MODELS = {
    "smollm2-135m": ModelSpec(DEFAULT_ALIAS, model_path),
    "gemma3-270m": ModelSpec(GEMMA3_ALIAS, gemma3_model_path),
}


async def _run_one(
    approach: str,
    server: LlamaServer,
    tasks: Sequence[LabelledTask],
    *,
    seed: int,
    temperature: float,
    max_tokens: int,
    max_retries: int,
) -> tuple[list[Record], dict[str, Any]]:
    """One approach (or a variant of ours) over the tasks, on `server`."""
    if approach == "naive":
        records = await run_naive(
            server, tasks, seed=seed, temperature=temperature, max_tokens=max_tokens
        )
        return records, {}
    if approach == "instructor":
        return await run_instructor(
            server,
            tasks,
            seed=seed,
            temperature=temperature,
            max_tokens=max_tokens,
            max_retries=max_retries,
            task_set="labelled",
        )
    variant = structured_ideas.VARIANTS[approach] if approach != "ours" else None
    with variant() if variant else contextlib.nullcontext():
        records = await run_ours(
            server,
            tasks,
            seed=seed,
            temperature=temperature,
            max_tokens=max_tokens,
            max_retries=max_retries,
        )
    await close_clients()  # the service's pooled aiohttp session, before the loop ends
    return records, {}


def score(records: Sequence[Record], tasks: Sequence[LabelledTask]) -> list[Record]:
    """`records` with each one's ``fields`` (field name → right) added."""
    expected = {t.task_id: t.expected for t in tasks}
    return [
        {**r, "fields": score_fields(expected[r["task_id"]], r["value"] if r["valid"] else None)}
        for r in records
    ]


def summarise(records: Sequence[Record]) -> dict[str, Any]:
    """`summarise_scores` plus mean attempts and p50 latency (ms)."""
    summary = summarise_scores(records)
    if records:
        summary["mean_attempts"] = round(statistics.fmean(r["attempts"] for r in records), 3)
        summary["p50_latency_ms"] = round(statistics.median(r["latency_ms"] for r in records), 1)
    return summary


def by_class(records: Sequence[Record]) -> dict[str, Any]:
    """Summaries per task class and ``overall``."""
    table = {c: summarise([r for r in records if r["task_class"] == c]) for c in LABELLED_CLASSES}
    table["overall"] = summarise(records)
    return table


def verdicts(summary: dict[str, dict[str, dict[str, Any]]], ours: str = "ours") -> dict[str, Any]:
    """The two goals, judged on `summary[model][approach][class]`, for `ours` (or a variant)."""
    valid = {
        model: approaches[ours]["overall"]["valid_share"] or 0.0
        for model, approaches in summary.items()
    }
    behind = [
        {
            "model": model,
            "task_class": cls,
            "ours": approaches[ours][cls]["fields_right_share"],
            "instructor": approaches["instructor"][cls]["fields_right_share"],
        }
        for model, approaches in summary.items()
        if "instructor" in approaches
        for cls in LABELLED_CLASSES
        if (approaches[ours][cls]["fields_right_share"] or 0.0)
        <= (approaches["instructor"][cls]["fields_right_share"] or 0.0)
    ]
    compared = all("instructor" in approaches for approaches in summary.values())
    return {
        "approach": ours,
        "valid_share": valid,
        "valid_met": bool(valid) and all(v >= TARGET_VALID_SHARE for v in valid.values()),
        "not_ahead": behind,
        "ahead_met": compared and bool(summary) and not behind,
    }


def run(
    *,
    models: Sequence[str] = tuple(MODELS),
    variants: Sequence[str] = (),
    baselines: Sequence[str] = APPROACHES,
    seed: int = DEFAULT_SEED,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_retries: int = DEFAULT_MAX_RETRIES,
    n_threads: int = DEFAULT_THREADS,
    task_ids: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    output: Path | None = OUTPUT,
) -> dict[str, Any]:
    """Every approach (and variant) on every model, one fresh server at a time; the report."""
    tasks = [t for t in LABELLED_TASKS if not task_ids or t.task_id in task_ids]
    approaches = (*baselines, *variants)
    started = time.perf_counter()
    records: dict[str, dict[str, list[Record]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    meta: dict[str, Any] = {}
    previous = get_settings()
    try:
        for model in models:
            spec = MODELS[model]
            path = spec.path()
            records[model], seconds[model] = {}, {}
            for approach in approaches:
                with LlamaServer(
                    model=spec.alias, gguf_path=path, n_threads=n_threads, seed=seed
                ) as server:
                    set_settings(
                        Settings(
                            _env_file=None,
                            llm_provider=LLMProvider.LMSTUDIO,
                            lmstudio_base_url=server.base_url,
                            lmstudio_model=server.model,
                            lmstudio_max_retries=max_retries,
                        )
                    )
                    began = time.perf_counter()
                    raw, extra = asyncio.run(
                        _run_one(
                            approach,
                            server,
                            tasks,
                            seed=seed,
                            temperature=temperature,
                            max_tokens=max_tokens,
                            max_retries=max_retries,
                        )
                    )
                    seconds[model][approach] = round(time.perf_counter() - began, 1)
                    meta.update(extra)
                records[model][approach] = score(raw, tasks)
                log(f"[structured] {model} {approach}: {seconds[model][approach]} s")
    finally:
        set_settings(previous)
    summary = {
        model: {name: by_class(rows) for name, rows in per_model.items()}
        for model, per_model in records.items()
    }
    report: dict[str, Any] = {
        "settings": {
            "models": {m: MODELS[m].alias for m in models},
            "server_threads": n_threads,
            "fresh_server_per_approach": True,
            "seed": seed,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "attempt_budget": 1 + max_retries,
            "instructor": meta,
            "tasks": len(tasks),
            "tasks_per_class": {
                c: sum(1 for t in tasks if t.task_class == c) for c in LABELLED_CLASSES
            },
            "approaches": list(approaches),
        },
        "summary": summary,
        "verdicts": {
            name: verdicts(summary, name) for name in ("ours", *variants) if name in approaches
        },
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
        "records": records,
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def to_markdown(result: dict[str, Any]) -> str:
    """Settings, one table per model (class by approach), the verdicts."""
    settings = result["settings"]
    lines = [
        f"{settings['tasks']} labelled tasks "
        f"({', '.join(f'{c} {n}' for c, n in settings['tasks_per_class'].items())}), scored "
        "field by field (an invalid reply scores every field wrong); llama.cpp via xllamacpp, "
        f"{settings['server_threads']} thread, a fresh server per approach; temperature "
        f"{settings['temperature']}, seed {settings['seed']}, max_tokens "
        f"{settings['max_tokens']}; ours and instructor "
        f"({settings['instructor'].get('instructor', '?')}, "
        f"`{settings['instructor'].get('mode', '?')}`) get {settings['attempt_budget']} "
        "attempts, naive `json_object` 1. Machine shared with other work: latencies are noisy.",
    ]
    for model, approaches in result["summary"].items():
        lines += [
            "",
            f"**{model}** (`{settings['models'][model]}`)",
            "",
            "| Task class | Approach | Valid | Fields right | All fields right "
            "| Mean attempts | p50 latency (ms) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for cls in (*LABELLED_CLASSES, "overall"):
            for name, table in approaches.items():
                row = table[cls]
                if not row["calls"]:
                    continue
                label = f"**{cls}**" if cls == "overall" else cls
                lines.append(
                    f"| {label} (n={row['calls']}) | {name} | {percent(row['valid_share'])} "
                    f"| {percent(row['fields_right_share'])} "
                    f"({row['fields_right']}/{row['fields']}) "
                    f"| {percent(row['all_right_share'])} | {row['mean_attempts']:.2f} "
                    f"| {row['p50_latency_ms']:.0f} |"
                )
    lines.append("")
    for name, verdict in result["verdicts"].items():
        valid = ", ".join(f"{m} {percent(v)}" for m, v in verdict["valid_share"].items())
        lines.append(
            f"- {name}: structured valid ≥ {TARGET_VALID_SHARE * 100:.0f} % on both models: "
            f"**{'met' if verdict['valid_met'] else 'NOT met'}** ({valid})"
        )
        gaps = "; ".join(
            f"{g['model']} {g['task_class']} {percent(g['ours'])} vs {percent(g['instructor'])}"
            for g in verdict["not_ahead"]
        )
        lines.append(
            f"- {name}: fields right ahead of instructor on every task class, on both models: "
            f"**{'met' if verdict['ahead_met'] else 'NOT met'}**"
            + (f" (not ahead: {gaps})" if gaps else "")
        )
    return "\n".join(lines)


NOTES = ROOT / "benchmarks" / "structured_ideas.md"


def section(result: dict[str, Any]) -> str:
    """`to_markdown` under its own heading, then the ideas tried, for RESULTS.md."""
    text = "### From valid to right: the labelled set\n\n" + to_markdown(result)
    if NOTES.exists():
        text += "\n\n" + NOTES.read_text().split("-->", 1)[-1].strip()
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the labelled benchmark, print markdown, write the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.structured_accuracy")
    parser.add_argument("--model", action="append", dest="models", choices=sorted(MODELS))
    parser.add_argument(
        "--variant", action="append", default=[], choices=sorted(structured_ideas.VARIANTS)
    )
    parser.add_argument(
        "--baseline",
        action="append",
        dest="baselines",
        choices=APPROACHES,
        help="run only these of ours, instructor and naive (default: all three)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="llama.cpp threads")
    parser.add_argument("--task", action="append", dest="tasks", help="only this task id")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    result = run(
        models=args.models or tuple(MODELS),
        variants=args.variant,
        baselines=args.baselines or APPROACHES,
        seed=args.seed,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        max_retries=args.max_retries,
        n_threads=args.threads,
        task_ids=args.tasks,
        output=args.output,
    )
    print(to_markdown(result))
    print(f"\n{result['seconds']['total']} s; report in {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
