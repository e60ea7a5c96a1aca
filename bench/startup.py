"""CPU time of one `optgen check` and one `optgen compile` of a small rule, each in a fresh
process: what a user waits for before optgen reads the file (imports, the parser's tables)
plus the work itself.

    python bench/startup.py                          # this checkout
    python bench/startup.py --tree /path/to/other    # another checkout, side by side

Each command runs `--repeats` times in turn (checkouts interleaved) and the least CPU time
(user + system of the child) is reported, so a loaded machine inflates the figures less.
The parser's tables live in a private cache folder made for the run: the first process
builds them, the next ones load them, as on a user's machine after the first command.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RULE = """network Tiny {
    state x
    param t = 0.5 learnable positive
    block T = mlp(hidden=2*dim, act=relu)
    layers 2
    update {
        x+ = x - t*T(x)
    }
    output x
}
"""


def cpu_seconds(command: list[str], env: dict[str, str], cwd: str) -> float:
    """CPU time (user + system) of one child process running `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Run outside every checkout: `python -m` puts the working folder first on sys.path.
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="another checkout")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    trees = [ROOT, *(Path(t).resolve() for t in args.tree)]
    with tempfile.TemporaryDirectory() as work:
        rule = Path(work) / "tiny.opt"
        rule.write_text(RULE)
        commands = {
            "check": ["check", str(rule)],
            "compile": ["compile", str(rule), "-o", str(Path(work) / "out")],
        }
        best: dict[tuple[Path, str], float] = {}
        for _ in range(args.repeats):
            for tree in trees:
                env = {
                    **os.environ,
                    "PYTHONPATH": str(tree),
                    "OPTGEN_CACHE": str(Path(work) / f"cache-{trees.index(tree)}"),
                }
                for name, words in commands.items():
                    seconds = cpu_seconds([sys.executable, "-m", "optgen", *words], env, work)
                    key = (tree, name)
                    best[key] = min(best.get(key, seconds), seconds)
    print(f"{'checkout':<40} {'check (CPU s)':>14} {'compile (CPU s)':>16}")
    for tree in trees:
        print(f"{str(tree):<40} {best[tree, 'check']:>14.2f} {best[tree, 'compile']:>16.2f}")


if __name__ == "__main__":
    main()
