"""`make bench`: every benchmark in one run, then `benchmarks/RESULTS.md` and the plot.

python -m benchmarks            # the full run (about 12 minutes on 2 cores)
python -m benchmarks --quick    # a few seconds per part; prints the tables, writes no report
python -m benchmarks serving    # only the serving section (workers, servers, propagation)
python -m benchmarks structured # only structured output from valid to right (labelled set)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import latency, report

OUT = Path(__file__).resolve().parent / "out"


def main(argv: Sequence[str] | None = None) -> int:
    """Run latency/throughput/memory, structured-output quality and the profile; report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, no report written")
    parser.add_argument("--skip-structured", action="store_true")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-serving", action="store_true")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serving"]:
        from benchmarks import serving

        return serving.main(argv[1:])
    if argv[:1] == ["structured"]:
        from benchmarks import structured_accuracy

        return structured_accuracy.main(argv[1:])
    args = parser.parse_args(argv)
    started = time.monotonic()
    plan = latency.Plan(with_litellm=not args.skip_litellm)
    if args.quick:
        plan = latency.Plan(
            levels=(1, 50),
            duration=0.5,
            warmup=0.2,
            held_streams=100,
            with_litellm=False,
            knee_levels=(1, 4, 16, 50),
            knee_duration=0.3,
        )
    OUT.mkdir(exist_ok=True)
    result = latency.run(plan)
    (OUT / "latency.json").write_text(json.dumps(result))
    if args.quick:
        for table in (report.targets, report.non_stream_table, report.knee_table):
            print(table(result), end="\n\n")
        print(report.stream_table(result), report.memory_table(result), sep="\n\n")
    floors_md = None
    if not args.quick:
        from benchmarks import floor

        floors_md = floor.measure(duration=plan.duration, warmup=plan.warmup)
        (OUT / "floors.md").write_text(floors_md)
        print(floors_md)
    from benchmarks import policy_cost

    policy = policy_cost.run(*((0.5, 1) if args.quick else (2.0, 2)))
    (OUT / "policy_cost.json").write_text(json.dumps(policy))
    policy_md = policy_cost.to_markdown(policy)
    print(policy_md)
    structured_md = structured = accuracy = None
    if not args.skip_structured and not args.quick:
        from benchmarks import structured_accuracy, structured_quality

        structured = structured_quality.run()
        structured_md = structured_quality.to_markdown(structured)
        accuracy = structured_accuracy.run()
        structured_md += "\n\n" + structured_accuracy.section(accuracy)
        print(structured_md)
    profile_md = None
    if not args.quick:
        from benchmarks import profile

        profile_md = profile.profile()
        (OUT / "profile.md").write_text(profile_md)
        print(profile_md)
    serving_md = None
    if not args.skip_serving and not args.quick:
        from benchmarks import serving

        serving_result = serving.run()
        (OUT / "serving.json").write_text(json.dumps(serving_result))
        serving_md = serving.to_markdown(serving_result)
        print(serving_md)
    if not args.quick:
        path = report.write(
            result,
            structured_md,
            profile_md,
            serving_md=serving_md,
            structured=structured,
            floors_md=floors_md,
            accuracy=accuracy,
            policy_md=policy_md,
        )
        print(f"wrote {path} and {path.parent / 'latency.png'}")
    print(f"benchmarks took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
