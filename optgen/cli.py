"""The command line: `optgen compile | check | inspect`. The only module that prints and exits.

Exit status: 0 success, 1 user error (located message on stderr), 2 a bug in optgen.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from . import __version__, pipeline, present
from .errors import OptgenError
from .formatting import for_directory
from .pipeline import Result, Stage
from .resolve import snake_case
from .source import SourceFile


class UsageError(Exception):
    """A problem with the command line itself (a missing file, a bad option)."""


def _source(path: str) -> SourceFile:
    try:
        return SourceFile(path, Path(path).read_text(encoding="utf-8"))
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


def _compile_all(
    paths: list[str], strict: bool, until: Stage, formatting=None
) -> tuple[list[Result], bool]:
    """Every file through the pipeline, its diagnostics printed; a bad file does not stop
    the others from being checked. Returns the result of every readable file and whether
    any file failed."""
    results, failed = [], False
    for path in paths:
        try:
            source = _source(path)
        except UsageError as err:
            print(f"optgen: error: {err}", file=sys.stderr)
            failed = True
            continue
        result = pipeline.compile(source, strict=strict, until=until, formatting=formatting)
        for diagnostic in result.diagnostics:
            print(diagnostic.render(source), file=sys.stderr)
        results.append(result)
        failed = failed or not result.ok
    return results, failed


def cmd_compile(args) -> int:
    out_dir = Path(args.output)
    # Compile everything first: a failure anywhere writes nothing.
    # Formatted as black would format a file there: the destination's black settings.
    formatting = for_directory(out_dir, args.line_length)
    results, failed = _compile_all(args.files, args.strict, Stage.EMIT, formatting)
    if failed:
        print("optgen: nothing was written", file=sys.stderr)
        return 1
    outputs: dict[Path, str] = {}
    for result in results:
        for name, text in result.outputs.items():
            target = out_dir / name
            if target in outputs:
                raise UsageError(f"two inputs write {target}")
            outputs[target] = text
    if args.check:
        stale = [
            p
            for p, text in outputs.items()
            if not p.is_file() or p.read_text(encoding="utf-8") != text
        ]
        for p in stale:
            state = "missing" if not p.is_file() else "out of date"
            print(f"optgen: {p} is {state}", file=sys.stderr)
        if stale:
            print("optgen: run `optgen compile` to regenerate", file=sys.stderr)
            return 1
        print(f"optgen: {len(outputs)} files up to date")
        return 0
    for p, text in outputs.items():
        _write_atomically(p, text)
    for result in results:
        for net, cert in zip(result.networks, result.certificates):
            print(_summary(net, cert, result.source.path, out_dir))
        for model, cert in zip(result.models, result.model_certificates):
            target = out_dir / f"{snake_case(model.name)}.py"
            stages = f"model, {len(model.stages)} stages"
            verdict = present.verdict_word(cert.universal)
            print(f"{model.name}: {result.source.path} -> {target} ({stages}; universal {verdict})")
    return 0


def _summary(net, cert, path: str, out_dir: Path) -> str:
    target = out_dir / f"{snake_case(net.name)}.py"
    kind = f"{net.kind}, {net.depth} layers"
    return f"{net.name}: {path} -> {target} ({kind}; {present.summary_flags(cert)})"


def cmd_check(args) -> int:
    # The markdown table of models lists their FLOPS and PARAMS: measured on the files.
    until = Stage.EMIT if args.markdown else Stage.ANALYSIS
    results, failed = _compile_all(args.files, args.strict, until)
    good = [result for result in results if result.ok]
    if args.json:
        print(json.dumps(_json_objects(args.files, results), indent=2))
    elif args.markdown:
        rows = [
            (Path(result.source.path).name, net.name, net.rule, cert)
            for result in good
            for net, cert in zip(result.networks, result.certificates)
        ]
        sys.stdout.write(present.markdown_table(rows))
        models = [
            (Path(result.source.path).name, cert, flops, params)
            for result in good
            for cert, (flops, params) in zip(result.model_certificates, result.model_figures)
        ]
        if models:
            sys.stdout.write(present.model_markdown_table(models))
    else:
        for result in good:
            for cert in result.certificates:
                print(present.check_text(cert))
            for cert in result.model_certificates:
                print(present.model_check_text(cert))
    if args.plot and not failed:
        _plot(good, Path(args.plot))
    return 1 if failed else 0


def _json_objects(paths: list[str], results: list[Result]) -> list[dict]:
    """`check --json`: the certificates of each file in argument order; a file with errors
    (or that cannot be read) contributes an object holding its diagnostics instead."""
    by_path = {result.source.path: result for result in results}
    objects: list[dict] = []
    for path in paths:
        result = by_path.get(path)
        if result is None:
            unreadable = {"severity": "error", "line": None, "col": None, "hint": None}
            unreadable["message"] = "cannot read the file"
            objects.append({"file": path, "diagnostics": [unreadable]})
        elif result.ok:
            certs = (*result.certificates, *result.model_certificates)
            objects += [cert.as_dict() for cert in certs]
        else:
            diagnostics = [d.as_dict() for d in result.diagnostics]
            objects.append({"file": path, "diagnostics": diagnostics})
    return objects


def _plot(results: list[Result], path: Path) -> None:
    from .report import plot_certificate

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'optgen[experiments]'") from None
    networks = [(net, cert) for r in results for net, cert in zip(r.networks, r.certificates)]
    if len(networks) != 1:
        names = ", ".join(net.name for net, _ in networks)
        raise UsageError(f"--plot draws one network; these files hold {len(networks)}: {names}")
    net, cert = networks[0]
    plot_certificate(net, cert.as_dict(), path)
    print(f"optgen: wrote {path}", file=sys.stderr)


def cmd_inspect(args) -> int:
    until = Stage.FRONTEND if args.graph and not args.summary else Stage.EMIT
    formatting = for_directory(Path.cwd(), args.line_length)  # printed: black's view from here
    results, failed = _compile_all([args.file], False, until, formatting)
    if failed:
        return 1
    (result,) = results
    names = [item.name for item in (*result.networks, *result.models)]
    if args.network is not None and args.network not in names:
        raise UsageError(f"{args.file} has no network {args.network!r}; it has: {', '.join(names)}")
    if args.summary:
        return _summaries(args, result)
    chosen = [net for net in result.networks if args.network in (None, net.name)]
    if args.graph:
        from .graph import render_graph

        graphed = [m for m in result.models if args.network in (None, m.name)]
        for item in (*chosen, *graphed):
            print(render_graph(item, args.graph))
        return 0
    models = [m for m in result.models if args.network in (None, m.name)]
    for item in (*chosen, *models):
        sys.stdout.write(result.outputs[f"{snake_case(item.name)}.py"])
    return 0


def _summaries(args, result: Result) -> int:
    from .summary import model_summary

    models = [m for m in result.models if args.network in (None, m.name)]
    if not models:
        raise UsageError(f"--summary describes models, and {args.file} has none")
    for model, cert in zip(result.models, result.model_certificates):
        if model in models:
            source = result.outputs[f"{snake_case(model.name)}.py"]
            print(model_summary(model, source, cert))
    return 0


def cmd_experiment(args) -> int:
    from .experiments import DEFAULT_NETWORKS, MissingExtra, UnsupportedLayout, run

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
    except (MissingExtra, UnsupportedLayout) as err:
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a user error (exit 1, not argparse's 2,
    which optgen keeps for its own bugs), with a did-you-mean for misspelled words."""

    def error(self, message: str) -> NoReturn:
        usage = _command_parser(self, getattr(self, "argv", None) or sys.argv[1:]).format_usage()
        raise UsageError(f"{message}{_suggestion(self, message)}\n{usage.strip()}")


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The subcommand's parser when `argv` names one (its usage line is the helpful one)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            command = next((word for word in argv if word in action.choices), None)
            if command is not None:
                return action.choices[command]
    return parser


def _options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The option strings of the parser and of the subcommand named in `argv`."""
    parsers = {parser, _command_parser(parser, argv)}
    return {option for p in parsers for action in p._actions for option in action.option_strings}


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    words: list[str] = []
    choices: set[str] = set()
    if message.startswith("unrecognized arguments:"):
        words = [w for w in message.split(":", 1)[1].split() if w.startswith("-")]
        choices = _options(parser, getattr(parser, "argv", None) or sys.argv[1:])
    elif "invalid choice:" in message:
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            words = [match.group(1)]
            choices = set(re.findall(r"'?([\w.-]+)'?", match.group(2)))
    for word in words:
        word = word.split("=")[0]
        close = difflib.get_close_matches(word, sorted(choices - {word}), n=1, cutoff=0.6)
        if close:
            return f"; did you mean '{close[0]}'?"
    return ""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _line_length_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--line-length",
        type=_positive_int,
        metavar="N",
        help="format the files at N columns (default: the black settings of the output"
        " folder's project, else black's 88)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
    _line_length_option(p)
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
    p.add_argument(
        "--summary",
        action="store_true",
        help="each model's parts: parameters, FLOPs and output shape at the input size",
    )
    _line_length_option(p)
    p.set_defaults(run=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        parser.argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        return args.run(args)
    except OptgenError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except UsageError as err:
        print(f"optgen: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`optgen inspect FILE | head`): not an error of optgen's.
        # Point stdout at devnull so that the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug in optgen: say so, without a traceback
        print(f"optgen: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print(
            "optgen: this is a bug in optgen; please report it with the input file", file=sys.stderr
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
