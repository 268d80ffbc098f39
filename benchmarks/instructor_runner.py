"""Approach (c) of the structured-output benchmark: instructor in its JSON-schema mode.

Runs inside the instructor venv (`benchmarks.venvs.ensure_venv("instructor")`), never in the
project's: instructor's jiter pin clashes with our openai. Start it from the repository root::

    .bench/venvs/instructor/bin/python -m benchmarks.instructor_runner \\
        --base-url http://127.0.0.1:PORT/v1 --model smollm2-135m-instruct --output out.json

For every task of `benchmarks.structured_tasks` it calls
``client.chat.completions.create(response_model=..., max_retries=N)`` on
``instructor.from_openai(openai.OpenAI(...), mode=instructor.Mode.JSON_SCHEMA)``; in
instructor 1.17.0 ``max_retries=N`` means N retries after the first try (tenacity
``stop_after_attempt(N + 1)``). Attempts are counted honestly as the HTTP requests to
``/chat/completions`` seen by an event hook on the SDK's HTTP client (the SDK's own
transport retries are off), so nothing instructor does internally goes uncounted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import instructor
import openai

from benchmarks.structured_labelled import LABELLED_TASKS
from benchmarks.structured_tasks import TASKS

TASK_SETS = {"quality": TASKS, "labelled": LABELLED_TASKS}

RAW_CHARS = 600


def run_tasks(
    base_url: str,
    model: str,
    *,
    seed: int,
    temperature: float,
    max_retries: int,
    max_tokens: int,
    task_ids: Sequence[str] | None = None,
    task_set: str = "quality",
) -> dict[str, Any]:
    """Run every task of `task_set` (or those in `task_ids`) once; return the records."""
    requests = 0

    def count_request(request: Any) -> None:
        nonlocal requests
        if str(request.url.path).endswith("/chat/completions"):
            requests += 1

    http_client = openai.DefaultHttpxClient(
        event_hooks={"request": [count_request]}, trust_env=False, timeout=300.0
    )
    sdk = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, http_client=http_client)
    client = instructor.from_openai(sdk, mode=instructor.Mode.JSON_SCHEMA)

    last_reply: list[str] = [""]

    def keep_reply(response: Any) -> None:
        choices = getattr(response, "choices", None) or []
        if choices:
            last_reply[0] = choices[0].message.content or ""

    client.on("completion:response", keep_reply)

    records: list[dict[str, Any]] = []
    wanted = set(task_ids) if task_ids else None
    for task in TASK_SETS[task_set]:
        if wanted is not None and task.task_id not in wanted:
            continue
        requests, last_reply[0] = 0, ""
        error: str | None = None
        value: dict[str, Any] | None = None
        began = time.perf_counter()
        try:
            result = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": task.prompt}],
                response_model=task.model,
                max_retries=max_retries,
                temperature=temperature,
                seed=seed,
                max_tokens=max_tokens,
            )
            value = result.model_dump(mode="json")
            valid = True
        except Exception as exc:  # every failure counts as "no valid instance"
            valid = False
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:RAW_CHARS]
        latency_ms = (time.perf_counter() - began) * 1000
        records.append(
            {
                "task_id": task.task_id,
                "task_class": task.task_class,
                "valid": valid,
                "attempts": requests,
                "latency_ms": round(latency_ms, 1),
                "mode": instructor.Mode.JSON_SCHEMA.value,
                "error": error,
                "reply": last_reply[0][:RAW_CHARS],
                "value": value,
            }
        )
    http_client.close()
    return {
        "meta": {
            "instructor": version("instructor"),
            "openai": version("openai"),
            "python": sys.version.split()[0],
            "mode": instructor.Mode.JSON_SCHEMA.value,
            "max_retries": max_retries,
            "p50_latency_ms": statistics.median(r["latency_ms"] for r in records)
            if records
            else None,
        },
        "records": records,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the tasks and write the JSON report to `--output`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructor_runner")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL (/v1)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-retries", type=int, default=3, help="retries after the first")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--task", action="append", dest="tasks", help="only this task id")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--task-set", choices=sorted(TASK_SETS), default="quality")
    args = parser.parse_args(argv)
    report = run_tasks(
        args.base_url,
        args.model,
        seed=args.seed,
        temperature=args.temperature,
        max_retries=args.max_retries,
        max_tokens=args.max_tokens,
        task_ids=args.tasks,
        task_set=args.task_set,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
