"""The thread policy of ``oodlib run`` and ``oodlib book``, measured (never asserted in tests).

    python -m oodlib.bench_threads [--chapter section2_1_algorithm] [--profile smoke] [--repeats 2]
                                   [--policies 1 2 torch]

Executes one chapter with each policy in turn, ``repeats`` rounds (the policies alternate within a round, so a
drift of the machine's speed hits them alike), exactly as ``oodlib run`` does (papermill, a fresh kernel, no
HTML page). A policy is a number of CPU threads per chapter kernel, or ``torch`` for torch's default (one per
core). Prints, per policy, the wall times of the chapter's execution (kernel start included), their median,
the load average before the first run and whether each policy's results file is byte-identical to the first
policy's. Warm the model cache first (one run of the chapter) so that training is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from .params import REPO_ROOT
from .runner import run_one


def _threads(policy: str) -> int | None:
    return None if policy == "torch" else int(policy)


def measure(chapter: str, profile: str, policies: list[str], repeats: int) -> dict:
    """Wall seconds per policy and whether the results match the first policy's byte for byte."""
    notebook = REPO_ROOT / "notebooks" / f"{chapter}.py"
    seconds: dict[str, list[float]] = {p: [] for p in policies}
    results: dict[str, set[bytes]] = {p: set() for p in policies}
    load = os.getloadavg()
    for _ in range(repeats):
        for policy in policies:
            outcome = run_one(notebook, profile, {}, threads=_threads(policy), html=False)
            if outcome.status != "executed":
                raise RuntimeError(f"{chapter} failed with threads={policy}:\n{outcome.error}")
            seconds[policy].append(round(outcome.seconds, 1))
            results[policy].add(Path(outcome.results).read_bytes())
    reference = results[policies[0]]
    return {"chapter": chapter, "profile": profile, "cpus": os.cpu_count(), "load_average_before": load,
            "policies": {p: {"seconds": seconds[p], "median_s": round(statistics.median(seconds[p]), 1),
                             "results_identical_to_" + policies[0]: results[p] == reference}
                         for p in policies}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oodlib.bench_threads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapter", default="section2_1_algorithm", help="chapter name (notebooks/<name>.py)")
    parser.add_argument("--profile", default="smoke", help="parameter profile (default: smoke)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the policies (default: 2)")
    parser.add_argument("--policies", nargs="+", default=["1", "2", "torch"],
                        help="threads per kernel, or 'torch' for torch's default (default: 1 2 torch)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.chapter, args.profile, args.policies, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
