"""The command line: `optgen compile | check | inspect`. The only module that prints and exits.

Exit status: 0 success, 1 user error (located message on stderr), 2 a bug in optgen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from . import __version__
from .errors import OptgenError


class UsageError(Exception):
    """A problem with the command line itself (a missing file, a bad option)."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read: {err}") from None


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _print_warnings(compiled) -> None:
    for warning in compiled.warnings:
        print(warning.render(compiled.source), file=sys.stderr)


def cmd_compile(args) -> int:
    from .api import certify, compile_source, frontend, strict_failures

    outputs: dict[Path, str] = {}
    summaries: list[str] = []
    out_dir = Path(args.output)
    # Compile everything first: a failure anywhere writes nothing.
    for path in args.files:
        text = _read(path)
        compiled = frontend(text, path)
        _print_warnings(compiled)
        files = compile_source(text, path, strict=args.strict)
        for net in compiled.networks:
            for diag in strict_failures(net):
                print(
                    diag.render(compiled.source).replace(": error: ", ": warning: ", 1),
                    file=sys.stderr,
                )
        for name, source in files.items():
            target = out_dir / name
            if target in outputs:
                raise UsageError(f"two inputs write {target}")
            outputs[target] = source
        for net in compiled.networks:
            summaries.append(_summary(net, certify(net, compiled.source), path, out_dir))
    if args.check:
        stale = [
            p
            for p, text in outputs.items()
            if not p.is_file() or p.read_text(encoding="utf-8") != text
        ]
        for p in stale:
            print(
                f"optgen: {p} is {'missing' if not p.is_file() else 'out of date'}", file=sys.stderr
            )
        if stale:
            print("optgen: run `optgen compile` to regenerate", file=sys.stderr)
            return 1
        print(f"optgen: {len(outputs)} files up to date")
        return 0
    for p, text in outputs.items():
        _write_atomically(p, text)
    for line in summaries:
        print(line)
    return 0


def _summary(net, certificate: dict, path: str, out_dir: Path) -> str:
    from .resolve import snake_case

    stem = snake_case(net.name)
    verdict = {True: "guaranteed", False: "not guaranteed", None: "unknown"}[
        (certificate.get("universal") or {}).get("guaranteed")
    ]

    def flag(key: str) -> str:
        value = certificate.get(key)
        return "?" if value is None else ("yes" if value else "no")

    return (
        f"{net.name}: {path} -> {out_dir / (stem + '.py')} ({net.kind}, {net.depth} layers; "
        f"zero-stable {flag('zero_stable')}, consistent {flag('consistent')}, universal {verdict})"
    )


def cmd_check(args) -> int:
    from .api import certify, frontend, strict_failures
    from .certify import render_text

    results = []
    rows = []
    failed = False
    for path in args.files:
        compiled = frontend(_read(path), path)
        _print_warnings(compiled)
        for net in compiled.networks:
            certificate = certify(net, compiled.source)
            results.append(certificate)
            rows.append((Path(path).name, net, certificate))
            failures = strict_failures(net)
            for diag in failures:
                severity = "error" if args.strict else "warning"
                print(
                    diag.render(compiled.source).replace(": error: ", f": {severity}: ", 1),
                    file=sys.stderr,
                )
            failed = failed or (args.strict and bool(failures))
            if not (args.json or args.markdown):
                print(render_text(net, certificate))
    if args.json:
        print(json.dumps(results, indent=2))
    if args.markdown:
        from .report import markdown_table

        sys.stdout.write(markdown_table(rows))
    if args.plot:
        _plot(rows, Path(args.plot))
    return 1 if failed else 0


def _plot(rows, path: Path) -> None:
    from .report import plot_certificate

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'optgen[experiments]'") from None
    if len(rows) != 1:
        names = ", ".join(net.name for _, net, _ in rows)
        raise UsageError(f"--plot draws one network; these files hold {len(rows)}: {names}")
    _, net, certificate = rows[0]
    plot_certificate(net, certificate, path)
    print(f"optgen: wrote {path}", file=sys.stderr)


def cmd_inspect(args) -> int:
    from .api import compile_source, frontend
    from .resolve import snake_case

    text = _read(args.file)
    compiled = frontend(text, args.file)
    names = [net.name for net in compiled.networks]
    if args.network is not None and args.network not in names:
        raise UsageError(f"{args.file} has no network {args.network!r}; it has: {', '.join(names)}")
    chosen = [net for net in compiled.networks if args.network in (None, net.name)]
    if args.graph:
        from .graph import render_graph

        for net in chosen:
            print(render_graph(net, args.graph))
        return 0
    outputs = compile_source(text, args.file)
    for net in chosen:
        sys.stdout.write(outputs[f"{snake_case(net.name)}.py"])
    return 0


def cmd_experiment(args) -> int:
    from .experiment import DEFAULT_NETWORKS, MissingExtra, run

    networks = (
        [n.strip() for n in args.networks.split(",") if n.strip()]
        if args.networks
        else list(DEFAULT_NETWORKS)
    )
    if args.seeds is not None and args.seeds < 1:
        raise UsageError("--seeds must be at least 1")
    try:
        report = run(
            args.name,
            Path(args.out),
            networks,
            quick=args.quick,
            seeds=args.seeds,
            progress_bar=sys.stderr.isatty(),
        )
    except MissingExtra as err:
        raise UsageError(str(err)) from None
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    for label, entry in report["networks"].items():
        shown = ", ".join(
            f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in entry["metrics"].items()
        )
        print(f"{args.name} {label}: {shown}")
    print(
        f"optgen: wrote {Path(args.out) / (args.name + '.json')} and {Path(args.out) / (args.name + '.png')}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optgen", description="Compile optimization update rules into PyTorch modules."
    )
    parser.add_argument("--version", action="version", version=f"optgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="write <name>.py and test_<name>.py for every network")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "-o",
        "--output",
        default="generated",
        metavar="DIR",
        help="output folder (default: generated)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when an output is missing or stale",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="a rule failing its convergence conditions is an error",
    )
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser("check", help="print the convergence and universality certificate")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the certificates as JSON")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when a rule fails its convergence conditions"
    )
    p.add_argument(
        "--markdown", action="store_true", help="print the certificates as one markdown table"
    )
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="draw the roots of rho (and the radius over a single fixed param)",
    )
    p.set_defaults(run=cmd_check)

    p = sub.add_parser(
        "experiment", help="train catalog networks on one of the paper's small experiments"
    )
    p.add_argument("name", choices=["rings", "parity", "telgarsky"])
    p.add_argument("--quick", action="store_true", help="a short run (under a minute on two cores)")
    p.add_argument("--seeds", type=int, help="number of seeds (default 3, 1 with --quick)")
    p.add_argument(
        "--out",
        default="out/experiments",
        metavar="DIR",
        help="output folder (default: out/experiments)",
    )
    p.add_argument(
        "--networks",
        metavar="A,B,...",
        help="catalog names or .opt files (default: gd,heavy_ball,nesterov,nesterov_k,dense,ladmm)",
    )
    p.set_defaults(run=cmd_experiment)

    p = sub.add_parser("inspect", help="print the generated module (or the layer graph)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--network", metavar="NAME")
    p.add_argument("--graph", choices=["mermaid", "dot"])
    p.set_defaults(run=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except OptgenError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except UsageError as err:
        print(f"optgen: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug in optgen: say so, without a traceback
        print(f"optgen: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print(
            "optgen: this is a bug in optgen; please report it with the input file", file=sys.stderr
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
