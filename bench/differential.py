"""The differential campaign (issue 24): generated rules, compiled and compared with the
reference interpreter on outputs and gradients.

    python bench/differential.py --cases 10000 --seed S [--jobs N] [--out FILE.json]
    python bench/differential.py --case SEED          # one case: its text and outcome

Case i of a campaign has the seed S*1,000,000 + i (tests/campaign_rules.py:
`campaign_case`): networks, and models at 15 %, with statements whose order matters,
locals and their history, full and sliding sums, lags, schedules, recursive schedules,
learnable, per-layer and per-channel params, `checkpoint`, implicit statements and
equilibria at a low rate. Cases are compiled `--batch` at a time in one source; each
module is built in float64 with random blocks and compared with `optgen.reference`: the
output and the gradients of the input and of every parameter, 1e-10 relative for explicit
rules, 1e-8 for solved ones.

A case is rejected (an OptgenError: the generator wrote an invalid rule), compared (it
agrees), a mismatch, a crash (any other exception: the compiler, the module or the
reference; those matching a known bug are counted apart), unsupported (a construct the
reference does not define) or not converged (a solve missed its tolerance). The summary,
printed and written as JSON, lists every mismatch and crash with its seed and text; it is
rewritten as the campaign goes, so that a run cut short keeps what it found.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
SEED_STRIDE = 1_000_000


def _setup() -> None:
    """One thread per process (the machine is shared), the tests' helpers importable."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import torch

    torch.set_num_threads(1)


def _run_batch(job: tuple[list[int], bool, int]) -> list[dict]:
    seeds, avoid, deadline = job
    _setup()
    import campaign_rules

    cases = [campaign_rules.campaign_case(seed, avoid) for seed in seeds]
    outcomes = campaign_rules.check_batch(cases, deadline)
    rows = []
    for case, outcome in zip(cases, outcomes):
        row = dict(vars(outcome))
        if outcome.finding:
            row["text"] = case.text
        rows.append(row)
    return rows


def _pattern(message: str) -> str:
    """A rejection's message without its names and numbers: the kind of error."""
    text = re.sub(r"^\d+:\d+: ", "", message)
    text = re.sub(r"'[^']*'", "'_'", text)
    text = re.sub(r"\b(Model|Net)\d+[A-Z]?\b", "N", text)
    return re.sub(r"\d+(\.\d+)?", "#", text)[:160]


def _signatures(crashes: list[dict]) -> dict:
    """Crashes grouped by where and what: the stage and the exception's last line."""
    groups: dict[str, dict] = {}
    for r in crashes:
        last = r["message"].strip().splitlines()[-1] if r["message"].strip() else ""
        key = f"{r['stage']}: {re.sub(r'[0-9]+', '#', last)[:160]}"
        group = groups.setdefault(key, {"count": 0, "known": r["known"], "seeds": []})
        group["count"] += 1
        if len(group["seeds"]) < 5:
            group["seeds"].append(r["seed"])
    return groups


class Summary:
    def __init__(self, args):
        self.args = args
        self.rows: list[dict] = []
        self.start = time.perf_counter()

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)

    def as_dict(self) -> dict:
        import optgen

        rows = self.rows
        status = collections.Counter(r["status"] for r in rows)
        crashes = [r for r in rows if r["status"] == "crash"]
        new_crashes = [r for r in crashes if not r["known"]]
        known = collections.Counter(r["known"] for r in crashes if r["known"])
        compared = [r for r in rows if r["status"] in ("compared", "mismatch")]
        rejections = collections.Counter(
            _pattern(r["message"]) for r in rows if r["status"] == "rejected"
        )
        features = collections.Counter(f for r in rows for f in r["features"])
        order = sum(
            any(f.startswith("order:") and f != "order:permuted" for f in r["features"])
            for r in compared
        )

        def worst(solved: bool, agreeing: bool = False) -> dict | None:
            pool = [r for r in compared if r["solved"] == solved]
            if agreeing:
                pool = [r for r in pool if r["status"] == "compared"]
            if not pool:
                return None
            r = max(pool, key=lambda r: r["error"])
            return {"error": r["error"], "seed": r["seed"], "tensor": r["worst"]}

        def finding(r: dict) -> dict:
            keys = ("seed", "kind", "status", "stage", "message", "error", "worst", "known", "text")
            return {k: r.get(k) for k in keys}

        elapsed = time.perf_counter() - self.start
        return {
            "optgen": optgen.__version__,
            "command": " ".join(["python", "bench/differential.py", *sys.argv[1:]]),
            "seed": self.args.seed,
            "first_case_seed": self.args.seed * SEED_STRIDE + self.args.skip,
            "avoid_known_bugs": not self.args.allow_known_bugs,
            "cases": len(rows),
            "network_cases": sum(r["kind"] == "network" for r in rows),
            "model_cases": sum(r["kind"] == "model" for r in rows),
            "networks": sum(r["networks"] for r in rows),  # networks compared
            "models": sum(r["models"] for r in rows),  # models compared
            "rejected": status["rejected"],
            "rejection_rate": status["rejected"] / max(1, len(rows)),
            "compared": len(compared),
            "order_sensitive_compared": order,
            "agree": status["compared"],
            "mismatches": [
                finding(r) for r in rows if r["status"] == "mismatch" and not r["known"]
            ],
            "known_bug_mismatches": dict(
                collections.Counter(
                    r["known"] for r in rows if r["status"] == "mismatch" and r["known"]
                )
            ),
            "crashes": [finding(r) for r in new_crashes],
            "known_bug_crashes": dict(known),
            "known_bug_examples": {
                k: [r["seed"] for r in rows if r["known"] == k][:5]
                for k in sorted({r["known"] for r in rows if r["known"]})
            },
            "crash_signatures": _signatures(crashes),
            "unsupported": status["unsupported"],
            "not_converged": status["not_converged"],
            "max_relative_error": {"explicit": worst(False), "solved": worst(True)},
            "max_relative_error_agreeing": {
                "explicit": worst(False, True),
                "solved": worst(True, True),
            },
            "error_decades": dict(
                sorted(
                    collections.Counter(
                        "0" if r["error"] == 0 else f"1e{math.floor(math.log10(r['error']))}"
                        for r in compared
                        if r["error"] == r["error"]  # not NaN
                    ).items()
                )
            ),
            "rejections": dict(rejections.most_common()),
            "rejection_examples": {
                p: next(
                    r["seed"]
                    for r in rows
                    if r["status"] == "rejected" and _pattern(r["message"]) == p
                )
                for p in rejections
            },
            "features": dict(sorted(features.items())),
            "slowest_case": max(
                ({"seed": r["seed"], "seconds": r["seconds"]} for r in rows),
                key=lambda r: r["seconds"],
                default=None,
            ),
            "time_s": round(elapsed, 1),
        }

    def write(self, path: Path | None) -> dict:
        summary = self.as_dict()
        if path is not None:
            temporary = path.with_suffix(path.suffix + ".tmp")
            temporary.write_text(json.dumps(summary, indent=1) + "\n")
            temporary.replace(path)
        return summary


def _print(summary: dict) -> None:
    print(
        f"optgen {summary['optgen']}: {summary['cases']} cases (seed {summary['seed']}) "
        f"in {summary['time_s']:.0f} s"
    )
    for key in (
        "network_cases",
        "model_cases",
        "networks",
        "models",
        "rejected",
        "compared",
        "order_sensitive_compared",
        "agree",
        "unsupported",
        "not_converged",
    ):
        print(f"  {key}: {summary[key]}")
    print(f"  mismatches (new): {len(summary['mismatches'])}")
    print(f"  known-bug mismatches: {summary['known_bug_mismatches']}")
    print(f"  crashes (new): {len(summary['crashes'])}")
    print(f"  known-bug crashes: {summary['known_bug_crashes']}")
    for signature, group in summary["crash_signatures"].items():
        print(f"    {group['count']} x [{group['known'] or 'NEW'}] {signature}")
    print(f"  max relative error: {summary['max_relative_error']}")
    print(f"  ... of the agreeing cases: {summary['max_relative_error_agreeing']}")
    print(f"  rejection rate: {summary['rejection_rate']:.3f}")
    for pattern, count in summary["rejections"].items():
        print(f"    {count} x {pattern}")
    for finding in summary["mismatches"] + summary["crashes"]:
        print(f"--- {finding['status']} at seed {finding['seed']} ({finding['stage']})")
        print(finding["message"][-1500:])
        print(finding["text"])


def _one(seed: int, avoid: bool, deadline: int) -> int:
    _setup()
    import campaign_rules

    case = campaign_rules.campaign_case(seed, avoid)
    print(case.text)
    print(f"features: {sorted(case.features)}; depth {case.depth}, start {case.start}")
    (outcome,) = campaign_rules.check_batch([case], deadline)
    print(f"{outcome.status} {outcome.stage} {outcome.known or ''}")
    print(f"worst: {outcome.worst} {outcome.error:.3g}")
    print(outcome.message)
    return 1 if outcome.finding else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--batch", type=int, default=10, help="cases compiled in one source")
    parser.add_argument("--out", type=Path, default=None, help="the JSON summary")
    parser.add_argument("--deadline", type=int, default=300, help="seconds a case may take")
    parser.add_argument(
        "--allow-known-bugs", action="store_true", help="generate the known bugs' constructs"
    )
    parser.add_argument("--case", type=int, default=None, help="run the case of one seed")
    parser.add_argument(
        "--skip", type=int, default=0, help="start at case i (a campaign run in parts)"
    )
    args = parser.parse_args(argv)
    avoid = not args.allow_known_bugs
    if args.case is not None:
        return _one(args.case, avoid, args.deadline)
    first = args.seed * SEED_STRIDE + args.skip
    seeds = list(range(first, first + args.cases))
    jobs = [
        (seeds[i : i + args.batch], avoid, args.deadline) for i in range(0, len(seeds), args.batch)
    ]
    summary = Summary(args)
    done = 0
    last = time.perf_counter()
    if args.jobs > 1:
        pool = multiprocessing.get_context("spawn").Pool(args.jobs)
        results = pool.imap(_run_batch, jobs)
    else:
        pool, results = None, map(_run_batch, jobs)
    try:
        for rows in results:
            summary.add(rows)
            done += len(rows)
            for row in rows:
                if row["status"] in ("mismatch", "crash"):
                    tag = f"known: {row['known']}" if row["known"] else "NEW"
                    print(
                        f"=== {row['status']} ({tag}) at seed {row['seed']}, {row['stage']}: "
                        f"{row['message'][-400:]}",
                        file=sys.stderr,
                    )
            if time.perf_counter() - last > 60 or done == len(seeds):
                last = time.perf_counter()
                partial = summary.write(args.out)
                print(
                    f"{done} cases, {len(partial['mismatches'])} mismatches, "
                    f"{len(partial['crashes'])} new crashes, "
                    f"{sum(partial['known_bug_crashes'].values())} known crashes, "
                    f"{sum(partial['known_bug_mismatches'].values())} known mismatches, "
                    f"{partial['rejected']} rejected, {partial['time_s']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if pool is not None:
            pool.terminate()
    final = summary.write(args.out)
    _print(final)
    return 1 if final["mismatches"] or final["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
