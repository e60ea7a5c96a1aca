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
from pathlib import Path
from typing import NoReturn

from . import pipeline, present
from ._version import __version__
from .backend.formatting import for_directory
from .errors import OptgenError
from .naming import module_file
from .output import (
    Output,
    UsageError,
    WriteFailed,
    abandoned,
    foreign,
    outputs_of,
    replace_text,
    stale,
    write_all,
)
from .pipeline import Result, Stage
from .source import SourceFile

STDIN = "-"  # an input read from standard input, shown as <stdin>


def _inputs(paths: list[str]) -> list[str]:
    """The files to compile, as black takes them: a folder stands for every `.opt` file
    below it (sorted, hidden folders skipped), `-` for standard input."""
    found: list[str] = []
    for path in paths:
        folder = Path(path)
        if path != STDIN and folder.is_dir():
            below = sorted(
                p
                for p in folder.rglob("*.opt")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            )
            if not below:
                raise UsageError(f"{path}: a folder with no .opt file below it")
            found.extend(str(p) for p in below)
        else:
            found.append(path)
    if found.count(STDIN) > 1:
        raise UsageError("standard input (-) can be read once")
    return list(dict.fromkeys(found))


def _source(path: str) -> SourceFile:
    # Bytes decoded, not text mode: universal newlines would turn a lone '\r' in a comment
    # into a line break that compile_source does not see, shifting every later line.
    try:
        if path == STDIN:
            raw = getattr(sys.stdin, "buffer", None)  # none when a caller swapped stdin
            return SourceFile("<stdin>", raw.read().decode("utf-8") if raw else sys.stdin.read())
        return SourceFile(path, Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read: {err}") from None


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
    files = _inputs(args.files)
    results, failed = _compile_all(files, args.strict, Stage.EMIT, formatting)
    if failed:
        print("optgen: nothing was written", file=sys.stderr)
        return 1
    outputs = outputs_of(results, out_dir)
    if args.diff:
        changed = _print_diffs(outputs)
        return 1 if (args.check and changed) else 0
    if args.check:
        return _check_outputs(results, outputs, out_dir, _regenerate_command(args))
    refused = [message for message in map(foreign, outputs) if message is not None]
    if refused:
        print("\n".join(refused), file=sys.stderr)
        print("optgen: nothing was written", file=sys.stderr)
        return 1
    if outputs:
        try:
            write_all(outputs, out_dir)
        except WriteFailed as err:
            print(err, file=sys.stderr)
            return 1
    for path in abandoned(results, outputs, out_dir):
        print(
            f"optgen: note: {path} is from a network or model its file no longer has",
            file=sys.stderr,
        )
    if args.quiet:
        return 0
    for result in results:
        for net, cert in zip(result.networks, result.certificates):
            print(_summary(net, cert, result.source.path, out_dir))
        for model, cert in zip(result.models, result.model_certificates):
            target = out_dir / module_file(model.name)
            stages = f"model, {len(model.stages)} stages"
            verdict = present.verdict_word(cert.universal)
            print(f"{model.name}: {result.source.path} -> {target} ({stages}; universal {verdict})")
    return 0


def _regenerate_command(args) -> str:
    """The compile command that brings the outputs up to date: the same inputs and -o."""
    parts = ["optgen", "compile", *args.files, "-o", args.output]
    if args.line_length:
        parts += ["--line-length", str(args.line_length)]
    return " ".join(parts)


def _print_diffs(outputs: list[Output]) -> bool:
    """`compile --diff`: a unified diff per output that would change; whether any does."""
    changed = False
    for output in outputs:
        path = output.path
        try:
            old = path.read_text(encoding="utf-8") if path.is_file() else ""
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"{path}: cannot read: {err}") from None
        if old == output.text:
            continue
        changed = True
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                output.text.splitlines(keepends=True),
                fromfile=str(path) if path.is_file() else "/dev/null",
                tofile=str(path),
            )
        )
    return changed


def _check_outputs(
    results: list[Result], outputs: list[Output], out_dir: Path, regenerate: str
) -> int:
    """`compile --check`: every output up to date, and no file left from an item that
    the sources no longer have."""
    changed = [(output.path, state) for output in outputs if (state := stale(output))]
    for path in abandoned(results, outputs, out_dir):
        changed.append((path, "from a network or model its file no longer has"))
    for path, state in changed:
        print(f"optgen: {path} is {state}", file=sys.stderr)
    if changed:
        print(f"optgen: run `{regenerate}` to regenerate", file=sys.stderr)
        return 1
    print(f"optgen: {len(outputs)} files up to date")
    return 0


def _summary(net, cert, path: str, out_dir: Path) -> str:
    target = out_dir / module_file(net.name)
    kind = f"{net.kind}, {net.depth} layers"
    return f"{net.name}: {path} -> {target} ({kind}; {present.summary_flags(cert)})"


def cmd_check(args) -> int:
    # The markdown table of models lists their FLOPS and PARAMS: measured on the files.
    until = Stage.EMIT if args.markdown else Stage.ANALYSIS
    files = _inputs(args.files)
    results, failed = _compile_all(files, args.strict, until)
    good = [result for result in results if result.ok]
    if args.json:
        print(json.dumps(_json_objects(files, results), indent=2))
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
    elif not args.quiet:
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
        result = by_path.get("<stdin>" if path == STDIN else path)
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
    from .tools.report import plot_certificate

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


def _named(files: list[str]) -> str:
    """The inputs in a message: the file, or "these files"."""
    return files[0] if len(files) == 1 else "these files"


def cmd_inspect(args) -> int:
    until = Stage.FRONTEND if args.graph and not args.summary else Stage.EMIT
    formatting = for_directory(Path.cwd(), args.line_length)  # printed: black's view from here
    files = _inputs(args.files)
    results, failed = _compile_all(files, False, until, formatting)
    if failed:
        return 1
    names = [item.name for r in results for item in (*r.networks, *r.models)]
    if args.network is not None and args.network not in names:
        raise UsageError(
            f"{_named(files)} has no network {args.network!r}; it has: {', '.join(names)}"
        )
    if args.summary:
        return _summaries(args, results, files)
    for result in results:
        chosen = [net for net in result.networks if args.network in (None, net.name)]
        models = [m for m in result.models if args.network in (None, m.name)]
        if args.graph:
            from .tools.graph import render_graph

            for item in (*chosen, *models):
                print(render_graph(item, args.graph))
            continue
        for item in (*chosen, *models):
            sys.stdout.write(result.outputs[module_file(item.name)])
    return 0


def _summaries(args, results: list[Result], files: list[str]) -> int:
    from .tools.summary import model_summary

    chosen = [
        (result, model, cert)
        for result in results
        for model, cert in zip(result.models, result.model_certificates)
        if args.network in (None, model.name)
    ]
    if not chosen:
        have = "has" if len(files) == 1 else "have"
        raise UsageError(f"--summary describes models, and {_named(files)} {have} none")
    for result, model, cert in chosen:
        source = result.outputs[module_file(model.name)]
        print(model_summary(model, source, cert))
    return 0


def cmd_match(args) -> int:
    from .tools.match import Figure, match, widths_text, within_fraction

    within = within_fraction(args.within)
    source = _source(args.file)
    found = match(source, args.model, args.to, Figure(args.by), within)
    report = (
        f"# {found.model}: widths {widths_text(found.original)} -> {widths_text(found.widths)},"
        f" {found.figure.value} {found.reached:,} against {found.baseline}'s {found.target:,}"
        f" ({found.error:+.2%}; {found.candidates} candidates compiled)"
    )
    if args.write:
        replace_text(Path(args.file), found.text)
        print(report)
        return 0
    print(report)
    print(found.item)
    return 0


def cmd_experiment(args) -> int:
    from .experiments import (
        DEFAULT_NETWORKS,
        IMAGE_EXPERIMENTS,
        ImageExperimentError,
        MissingExtra,
        UnsupportedLayout,
        run,
        run_image_command,
    )

    if args.name in IMAGE_EXPERIMENTS:  # under torchrun or not; only rank 0 has lines to print
        try:
            lines = run_image_command(args, progress_bar=sys.stderr.isatty())
        except ImageExperimentError as err:
            raise UsageError(str(err)) from None
        for line in lines:
            print(line)
        return 0
    image_only = [
        flag
        for flag, value in (
            ("--resume", args.resume),
            ("--epochs", args.epochs),
            ("--batch", args.batch),
            ("--train-size", args.train_size),
            ("--test-size", args.test_size),
            ("--data", args.data),
            ("--device", args.device),
            ("--bf16", args.bf16),
            ("--channels-last", args.channels_last),
            ("--compile", args.compile),
        )
        if value not in (None, False)
    ]
    if image_only:
        raise UsageError(
            f"{', '.join(image_only)}: only for the image experiments"
            f" ({', '.join(IMAGE_EXPERIMENTS)})"
        )
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


FILES_HELP = ".opt files; a folder stands for every .opt file below it, - for standard input"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="optgen", description="Compile optimization update rules into PyTorch modules."
    )
    parser.add_argument("--version", action="version", version=f"optgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="write <name>.py and test_<name>.py for every network")
    p.add_argument("files", nargs="+", metavar="FILE", help=FILES_HELP)
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
    p.add_argument(
        "--diff",
        action="store_true",
        help="write nothing; print a unified diff of each output that would change"
        " (with --check, exit 1 when one would)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print errors and warnings only")
    _line_length_option(p)
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser("check", help="print the convergence and universality certificate")
    p.add_argument("files", nargs="+", metavar="FILE", help=FILES_HELP)
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print errors and warnings only; the exit status says the rest",
    )
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
        "experiment",
        help="train catalog networks on one of the paper's experiments (synthetic or images)",
    )
    p.add_argument(
        "name",
        choices=["rings", "parity", "telgarsky", "mnist", "digits", "fashion-mnist", "folder"],
        help="the experiment: rings, parity, telgarsky (synthetic) or mnist, digits,"
        " fashion-mnist, folder (images; folder needs --data)",
    )
    p.add_argument("--quick", action="store_true", help="a short run (under a minute on two cores)")
    p.add_argument(
        "--seeds",
        type=int,
        help="number of seeds (default 3; fashion-mnist and folder 5; 1 with --quick)",
    )
    p.add_argument(
        "--out",
        default="out/experiments",
        metavar="DIR",
        help="output folder (default: out/experiments)",
    )
    p.add_argument(
        "--networks",
        metavar="A,B,...",
        help="catalog names or .opt files (default: gd,heavy_ball,nesterov,nesterov_k,dense,ladmm;"
        " for mnist and digits the 12 catalog models wide_gd, ..., iso_vit_apg2; for"
        " fashion-mnist and folder deep_* and iso_*)",
    )
    images = p.add_argument_group("image experiments only (mnist, digits, fashion-mnist, folder)")
    images.add_argument(
        "--resume",
        action="store_true",
        help="continue DIR/NAME.json from its last finished network and seed (same settings)",
    )
    images.add_argument(
        "--epochs", type=int, help="training epochs (2; digits 8; fashion-mnist and folder 4)"
    )
    images.add_argument("--batch", type=int, help="global batch, split over the ranks (64)")
    images.add_argument(
        "--train-size",
        type=int,
        metavar="N",
        help="training images (mnist 4000, digits 1500, fashion-mnist and folder 15000 or all)",
    )
    images.add_argument(
        "--test-size",
        type=int,
        metavar="N",
        help="test images (mnist 1000, digits 297, fashion-mnist and folder: all of the test set)",
    )
    images.add_argument(
        "--data",
        metavar="DIR",
        help="fashion-mnist: the folder of its IDX files (default"
        " /usr/share/datasets/fashion-mnist, from Debian's dataset-fashion-mnist); folder:"
        " IDX files, CIFAR-style pickle batches or train/CLASS/*, test/CLASS/* images",
    )
    images.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="where to train: auto (CUDA when there is a device, the default), cpu or cuda;"
        " under torchrun each rank takes cuda:LOCAL_RANK",
    )
    images.add_argument(
        "--bf16",
        action="store_true",
        help="forward passes under bf16 autocast (a setting: it changes the numbers)",
    )
    images.add_argument(
        "--channels-last",
        action="store_true",
        help="the models and batches in torch.channels_last memory format",
    )
    images.add_argument(
        "--compile", action="store_true", help="the training forward through torch.compile"
    )
    p.set_defaults(run=cmd_experiment)

    p = sub.add_parser(
        "match",
        help="choose a model's widths so that its FLOPs (or params) match a baseline model's",
    )
    p.add_argument("file", metavar="FILE", help="the .opt file with both models")
    p.add_argument("--model", required=True, metavar="NAME", help="the model whose widths change")
    p.add_argument("--to", required=True, metavar="BASELINE", help="the model to match")
    p.add_argument(
        "--by",
        choices=["flops", "params"],
        default="flops",
        help="what to match (default: flops)",
    )
    p.add_argument(
        "--within", default="2%", metavar="PCT", help="the largest difference allowed (2%%)"
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="rewrite the model's widths in FILE instead of printing the model",
    )
    p.set_defaults(run=cmd_match)

    p = sub.add_parser("inspect", help="print the generated module (or the layer graph)")
    p.add_argument("files", nargs="+", metavar="FILE", help=FILES_HELP)
    p.add_argument(
        "--network", metavar="NAME", help="only this network or model (default: every one)"
    )
    p.add_argument(
        "--graph",
        choices=["mermaid", "dot"],
        help="print the layer's dataflow graph (a model's stages) instead of the source",
    )
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
    except OSError as err:  # the file system refused (a full disk, a read-only folder)
        where = f"{err.filename}: " if err.filename else ""
        print(f"optgen: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug in optgen: say so, without a traceback
        print(f"optgen: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print(
            "optgen: this is a bug in optgen; please report it with the input file", file=sys.stderr
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
