"""Structured-output quality on a real model: ours vs naive `json_object` vs instructor.

The in-process llama.cpp server of the real-model test tier
(`tests.realmodel.llama_server.LlamaServer`, SmolLM2-135M; a fresh one per approach, see
`run`) answers every task of `benchmarks.structured_tasks` three ways:

(a) ``ours``: `app.services.llm.structured.generate_structured` on LM Studio's `ProviderService`
    (json_schema → json_object → prompt ladder with validate-and-repair);
(b) ``naive``: one ``response_format={"type": "json_object"}`` call with the openai SDK,
    then ``Model.model_validate_json``; any error makes the call invalid, no retry;
(c) ``instructor``: instructor 1.17.0 in ``Mode.JSON_SCHEMA``, run in its own venv by
    `benchmarks/instructor_runner.py`.

All three send the same user prompt with the same temperature, seed and ``max_tokens``.
(a) and (c) get the same budget of validated attempts: our ladder allows
``1 + LMStudioConfig.max_retries`` (4 with the default 3; an HTTP 400 that moves the ladder
down a rung is not counted there, but is counted here as a request), instructor gets
``max_retries = budget - 1`` (its ``stop_after_attempt(max_retries + 1)``).
"Attempts" below is the number of chat-completion requests each approach sent for a task.

Run ``.venv/bin/python -m benchmarks.structured_quality`` from the repository root; it
prints a markdown table and writes ``benchmarks/out/structured_quality.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
from pydantic import ValidationError

from app.core.config import LLMProvider, Settings, get_settings, set_settings
from app.services.llm.calls import ProviderService
from app.services.llm.config import LMStudioConfig
from app.services.llm.errors import LLMError, LLMValidationError
from app.services.llm.protocol import Completion
from app.services.llm.providers.clients import close_clients
from app.services.llm.providers.lmstudio import SPEC
from app.services.llm.structured import forget_modes, generate_structured
from benchmarks.structured_tasks import TASK_CLASSES, TASKS, Task
from benchmarks.venvs import ROOT, ensure_venv
from tests.realmodel.llama_server import DEFAULT_THREADS, LlamaServer

APPROACHES = ("ours", "naive", "instructor")
OUTPUT = ROOT / "benchmarks" / "out" / "structured_quality.json"
DEFAULT_SEED = 42
DEFAULT_TEMPERATURE = 0.0
DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_RETRIES = 3  # LMStudioConfig's default: a budget of 4 validated attempts
TARGET_VALID_SHARE = 0.99
RAW_CHARS = 600
Record = dict[str, Any]


class _CountingLMStudioService(ProviderService):
    """LM Studio's `ProviderService` that counts the chat completions the ladder sends."""

    requests = 0

    async def complete(self, *args: Any, **kwargs: Any) -> Completion:
        """Count, then delegate."""
        self.requests += 1
        return await super().complete(*args, **kwargs)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:RAW_CHARS]


async def run_ours(
    server: LlamaServer,
    tasks: Sequence[Task],
    *,
    seed: int,
    temperature: float,
    max_tokens: int,
    max_retries: int,
) -> list[Record]:
    """Approach (a): `generate_structured` on LM Studio's `ProviderService`, one call a task."""
    config = LMStudioConfig(
        base_url=server.base_url,
        default_model=server.model,
        max_retries=max_retries,
        timeout=300,
    )
    service = _CountingLMStudioService(SPEC, config, retry_backoff=0.01)
    forget_modes()  # the remembered rung starts empty, as in a fresh process
    records: list[Record] = []
    for task in tasks:
        service.requests = 0
        valid, mode, error, reply, value = False, None, None, "", None
        began = time.perf_counter()
        try:
            result = await generate_structured(
                service,
                task.prompt,
                task.model,
                temperature=temperature,
                seed=seed,
                max_tokens=max_tokens,
            )
            valid, mode, reply = True, str(result.mode), result.raw_text
            value = result.value.model_dump(mode="json")
        except LLMValidationError as exc:
            error, reply = _one_line(exc), exc.raw_text
        except LLMError as exc:
            error = _one_line(exc)
        latency_ms = (time.perf_counter() - began) * 1000
        records.append(
            _record(task, valid, service.requests, latency_ms, mode, error, reply, value),
        )
    return records


async def run_naive(
    server: LlamaServer,
    tasks: Sequence[Task],
    *,
    seed: int,
    temperature: float,
    max_tokens: int,
) -> list[Record]:
    """Approach (b): one `json_object` request, `model_validate_json`, give up on any error."""
    records: list[Record] = []
    async with openai.AsyncOpenAI(
        base_url=server.base_url,
        api_key="unused",
        max_retries=0,
        timeout=300.0,
        http_client=openai.DefaultAsyncHttpxClient(trust_env=False, timeout=300.0),
    ) as client:
        for task in tasks:
            valid, error, reply, value = False, None, "", None
            began = time.perf_counter()
            try:
                response = await client.chat.completions.create(
                    model=server.model,
                    messages=[{"role": "user", "content": task.prompt}],
                    response_format={"type": "json_object"},
                    temperature=temperature,
                    seed=seed,
                    max_tokens=max_tokens,
                )
                reply = response.choices[0].message.content or ""
                value = task.model.model_validate_json(reply).model_dump(mode="json")
                valid = True
            except (openai.OpenAIError, ValidationError, ValueError, IndexError) as exc:
                error = _one_line(exc)
            latency_ms = (time.perf_counter() - began) * 1000
            records.append(_record(task, valid, 1, latency_ms, "json_object", error, reply, value))
    return records


async def run_instructor(
    server: LlamaServer,
    tasks: Sequence[Task],
    *,
    seed: int,
    temperature: float,
    max_tokens: int,
    max_retries: int,
    task_set: str = "quality",
) -> tuple[list[Record], dict[str, Any]]:
    """Approach (c): `benchmarks.instructor_runner` in the instructor venv, as a subprocess.

    The server runs on native threads in this process, so awaiting the child here does not
    stall it. Returns the records and the runner's metadata (versions, mode).
    """
    python = ensure_venv("instructor")
    with tempfile.TemporaryDirectory(prefix="bench-instructor-") as tmp:
        output = Path(tmp) / "instructor.json"
        command = [
            str(python),
            "-m",
            "benchmarks.instructor_runner",
            "--base-url",
            server.base_url,
            "--model",
            server.model,
            "--seed",
            str(seed),
            "--temperature",
            str(temperature),
            "--max-retries",
            str(max_retries),
            "--max-tokens",
            str(max_tokens),
            "--output",
            str(output),
            "--task-set",
            task_set,
        ]
        for task in tasks:
            command += ["--task", task.task_id]
        child = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        _, stderr = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(
                f"instructor runner exited with {child.returncode}: "
                f"{stderr.decode(errors='replace')[-2000:]}"
            )
        report = json.loads(output.read_text())
    return report["records"], report["meta"]


def _record(
    task: Task,
    valid: bool,
    attempts: int,
    latency_ms: float,
    mode: str | None,
    error: str | None,
    reply: str,
    value: dict[str, Any] | None = None,
) -> Record:
    return {
        "task_id": task.task_id,
        "task_class": task.task_class,
        "valid": valid,
        "attempts": attempts,
        "latency_ms": round(latency_ms, 1),
        "mode": mode,
        "error": error,
        "reply": reply[:RAW_CHARS],
        "value": value,
    }


def summarise(records: Sequence[Record]) -> dict[str, Any]:
    """Calls, valid share, mean attempts and p50 latency (ms) of a set of records."""
    if not records:
        return {"calls": 0, "valid": 0, "valid_share": None, "mean_attempts": None}
    valid = sum(1 for r in records if r["valid"])
    return {
        "calls": len(records),
        "valid": valid,
        "valid_share": round(valid / len(records), 4),
        "mean_attempts": round(statistics.fmean(r["attempts"] for r in records), 3),
        "p50_latency_ms": round(statistics.median(r["latency_ms"] for r in records), 1),
    }


def _by_class(records: Sequence[Record]) -> dict[str, Any]:
    table = {c: summarise([r for r in records if r["task_class"] == c]) for c in TASK_CLASSES}
    table["overall"] = summarise(records)
    return table


def _verdict(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether ours meets the issue's target: ≥ 99 % valid, never below another approach."""
    ours = summary["ours"]
    behind = [
        {"task_class": cls, "approach": other}
        for cls in (*TASK_CLASSES, "overall")
        for other in APPROACHES[1:]
        if (summary[other][cls]["valid_share"] or 0) > (ours[cls]["valid_share"] or 0)
    ]
    share = ours["overall"]["valid_share"] or 0
    return {
        "target_valid_share": TARGET_VALID_SHARE,
        "ours_valid_share": share,
        "meets_valid_share": share >= TARGET_VALID_SHARE,
        "ours_behind": behind,
        "meets_target": share >= TARGET_VALID_SHARE and not behind,
    }


async def _run_approach(
    name: str,
    server: LlamaServer,
    tasks: Sequence[Task],
    *,
    seed: int,
    temperature: float,
    max_tokens: int,
    max_retries: int,
) -> tuple[list[Record], dict[str, Any]]:
    if name == "ours":
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
    if name == "naive":
        records = await run_naive(
            server, tasks, seed=seed, temperature=temperature, max_tokens=max_tokens
        )
        return records, {}
    return await run_instructor(
        server,
        tasks,
        seed=seed,
        temperature=temperature,
        max_tokens=max_tokens,
        max_retries=max_retries,
    )


def run(
    *,
    seed: int = DEFAULT_SEED,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_retries: int = DEFAULT_MAX_RETRIES,
    n_threads: int = DEFAULT_THREADS,
    task_ids: Sequence[str] | None = None,
    output: Path | None = OUTPUT,
) -> dict[str, Any]:
    """Run the three approaches on the task set against SmolLM2; return the report.

    Each approach gets a freshly started server with the same parameters: llama.cpp keeps
    earlier prompts in a RAM cache and skips their prompt processing when they come again,
    and naive and instructor send identical prompts, so on a shared server whichever ran
    second would get a latency discount (prompt processing runs at ~240 tokens/s here).

    The report holds the settings, per-approach summaries by task class and overall
    (``summary[approach][class]``), the verdict against the issue's target, and every
    per-task record (validity, attempts, latency, the last reply and error). It is also
    written to `output` as JSON unless `output` is None.
    """
    tasks = [t for t in TASKS if not task_ids or t.task_id in task_ids]
    started = time.perf_counter()
    records: dict[str, list[Record]] = {}
    seconds: dict[str, float] = {}
    instructor_meta: dict[str, Any] = {}
    model, n_ctx = "?", 0
    previous = get_settings()
    try:
        for name in APPROACHES:
            with LlamaServer(n_threads=n_threads, seed=seed) as server:
                # Our service reads process settings (concurrency, LLM_MAX_TOKENS for "more
                # room"); point them at the server under test, ignoring any `.env` file.
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
                records[name], meta = asyncio.run(
                    _run_approach(
                        name,
                        server,
                        tasks,
                        seed=seed,
                        temperature=temperature,
                        max_tokens=max_tokens,
                        max_retries=max_retries,
                    )
                )
                seconds[name] = time.perf_counter() - began
                instructor_meta.update(meta)
                model, n_ctx = server.model, server.n_ctx
    finally:
        set_settings(previous)
    summary = {name: _by_class(records[name]) for name in APPROACHES}
    report: dict[str, Any] = {
        "settings": {
            "model": model,
            "n_ctx": n_ctx,
            "server_threads": n_threads,
            "fresh_server_per_approach": True,
            "seed": seed,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "attempt_budget": 1 + max_retries,
            "ours_max_retries": max_retries,
            "instructor_max_retries": max_retries,
            "instructor": instructor_meta,
            "tasks": len(tasks),
            "tasks_per_class": {
                c: sum(1 for t in tasks if t.task_class == c) for c in TASK_CLASSES
            },
        },
        "summary": summary,
        "verdict": _verdict(summary),
        "seconds": {
            **{k: round(v, 1) for k, v in seconds.items()},
            "total": round(time.perf_counter() - started, 1),
        },
        "records": records,
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def percent(share: float | None) -> str:
    """A share as "12.3 %", or "n/a" when there is none."""
    return "n/a" if share is None else f"{share * 100:.1f} %"


def to_markdown(result: dict[str, Any]) -> str:
    """The report as markdown: settings line, one table (class by approach), failures."""
    settings = result["settings"]
    lines = [
        f"Model `{settings['model']}` (llama.cpp via xllamacpp, {settings['server_threads']} "
        f"thread), {settings['tasks']} tasks, temperature {settings['temperature']}, seed "
        f"{settings['seed']}, max_tokens {settings['max_tokens']}, budget "
        f"{settings['attempt_budget']} attempts for ours and instructor "
        f"(instructor {settings['instructor'].get('instructor', '?')}, "
        f"`{settings['instructor'].get('mode', '?')}`); naive makes 1 call.",
        "",
        "| Task class | Approach | Valid | Mean attempts | p50 latency (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for cls in (*TASK_CLASSES, "overall"):
        for name in APPROACHES:
            row = result["summary"][name][cls]
            if not row["calls"]:
                continue
            label = f"**{cls}**" if cls == "overall" else cls
            lines.append(
                f"| {label} (n={row['calls']}) | {name} | {percent(row['valid_share'])} "
                f"| {row['mean_attempts']:.2f} | {row['p50_latency_ms']:.0f} |"
            )
    verdict = result["verdict"]
    lines += [
        "",
        f"Target (ours ≥ {verdict['target_valid_share'] * 100:.0f} % valid and never below "
        f"another approach on any class): {'met' if verdict['meets_target'] else 'NOT met'}.",
    ]
    failures = [
        (name, r)
        for name in APPROACHES
        for r in result["records"][name]
        if not r["valid"] and name != "naive"
    ]
    if failures:
        lines += ["", "Failures of ours and instructor:", ""]
        lines += [f"- {name} `{r['task_id']}`: {r['error']}" for name, r in failures]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the markdown table and write the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.structured_quality")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--max-retries", type=int, default=DEFAULT_MAX_RETRIES, help="retries after the first"
    )
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="llama.cpp threads")
    parser.add_argument("--task", action="append", dest="tasks", help="only this task id")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    result = run(
        seed=args.seed,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        max_retries=args.max_retries,
        n_threads=args.threads,
        task_ids=args.tasks,
        output=args.output,
    )
    print(to_markdown(result))
    print(f"\n{result['seconds']} s; report in {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
