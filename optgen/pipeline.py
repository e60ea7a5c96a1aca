"""One compile of one source file: parse, resolve, analyse, lower and emit, each stage once.

`compile(source)` returns a `Result` holding the networks, their typed certificates, the
output files and every diagnostic (warnings and errors, one channel). It does not raise
for problems in the user's text: the API raises `OptgenError` from the result's errors,
the CLI prints them and goes on with the next file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from . import ir
from .analysis import Certificate, analyze
from .analysis.model import ModelCertificate, analyze_model
from .backend.models import lower_model, stage_networks
from .checks.carry import slot_mismatches
from .checks.model_size import model_size_errors
from .checks.precision import precision_warnings
from .checks.ranges import range_errors
from .checks.reach import unreached_warnings
from .checks.reversible import reversible_errors
from .errors import Diagnostic, OptgenError, Severity
from .naming import snake_case
from .resolve import resolve
from .source import SourceFile
from .syntax.parse import parse

if TYPE_CHECKING:  # black loads only to write files
    from .backend.formatting import Formatting


class Stage(IntEnum):
    """How far `compile` goes: the IR only, the certificates, or the output files too."""

    FRONTEND = 1
    ANALYSIS = 2
    EMIT = 3


@dataclass(frozen=True)
class Result:
    source: SourceFile
    networks: tuple[ir.Network, ...] = ()
    certificates: tuple[Certificate, ...] = ()  # one per network (Stage.ANALYSIS and on)
    outputs: dict[str, str] = field(default_factory=dict)  # file name -> text (Stage.EMIT)
    diagnostics: tuple[Diagnostic, ...] = ()  # in source order within each stage
    models: tuple[ir.Model, ...] = ()  # every model of the file (Stage.FRONTEND and on)
    model_certificates: tuple[ModelCertificate, ...] = ()  # one per model (Stage.ANALYSIS)
    model_figures: tuple[tuple[int | None, int], ...] = ()  # (FLOPS, PARAMS) per model (EMIT)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        if self.errors:
            raise OptgenError(self.errors, self.source)

    def certificate(self, net: ir.Network) -> Certificate:
        return self.certificates[self.networks.index(net)]


def convergence_diagnostics(cert: Certificate, strict: bool) -> list[Diagnostic]:
    """The analysis' warnings; with `strict`, the failed convergence conditions are errors."""
    failures = set(cert.failures())
    out = []
    for d in cert.diagnostics:
        if strict and (d.span, d.message) in failures:
            out.append(Diagnostic(Severity.ERROR, d.span, d.message))
        else:
            out.append(d)
    return out


def compile(
    source: SourceFile,
    *,
    strict: bool = False,
    until: Stage = Stage.EMIT,
    formatting: Formatting | None = None,
    models_only: frozenset[str] | None = None,
) -> Result:
    """Run the pipeline on one source as far as `until`; problems become diagnostics.

    The files are formatted with `formatting` (`optgen.backend.formatting.for_directory` of where
    they go), black's defaults when None. `models_only`: analyse and write these models
    alone (by name or file stem) and no network file: what a tool that trains one model
    of a catalog file needs, without the cost of the others (every check still runs).
    """
    warnings: list[Diagnostic] = []
    try:
        program = resolve(parse(source), source, warnings)
        networks, models = program.networks, program.models
    except OptgenError as err:
        return Result(source, diagnostics=tuple(warnings) + tuple(err.located))
    diagnostics = list(warnings)
    by_name = {net.name: net for net in networks}
    diagnostics.extend(model_size_errors(models, by_name))
    for model in models:
        for span, message in slot_mismatches(model, by_name):
            diagnostics.append(
                Diagnostic(Severity.ERROR, span, message, "write carry output after the transition")
            )
    diagnostics.extend(reversible_errors(networks))
    staged = [n for model in models for n in stage_networks(model, by_name)]
    # The checks and the analysis read `L` as the declared depth (a stage's: its own).
    checked = [ir.at_depth(n) for n in networks]
    if not any(d.severity is Severity.ERROR for d in diagnostics):
        diagnostics.extend(range_errors([*checked, *map(ir.at_depth, staged)]))
    if until < Stage.ANALYSIS or any(d.severity is Severity.ERROR for d in diagnostics):
        return Result(source, networks, diagnostics=tuple(diagnostics), models=models)
    diagnostics.extend(precision_warnings(checked))
    diagnostics.extend(unreached_warnings(checked))
    certificates = tuple(analyze(net) for net in networks)
    if models_only is not None:
        models = tuple(m for m in models if {m.name, snake_case(m.name)} & models_only)
    for cert in certificates:
        diagnostics.extend(convergence_diagnostics(cert, strict))
    by_network = {net.name: cert for net, cert in zip(networks, certificates)}
    model_certificates = tuple(
        analyze_model(model, tuple(analyze(n) for n in stage_networks(model, by_name)))
        for model in models
    )
    # A stage runs its network at its own depth and first layer, where a schedule in k can
    # fail its conditions though the declared layers pass: those warnings (errors with
    # --strict) are the stage's, reported once.
    seen = {(d.span, d.message) for d in diagnostics}
    for model_cert in model_certificates:
        for _, stage_cert in model_cert.stages:
            for d in convergence_diagnostics(stage_cert, strict):
                if (d.span, d.message) not in seen:
                    seen.add((d.span, d.message))
                    diagnostics.append(d)
    result = Result(
        source,
        networks,
        certificates,
        diagnostics=tuple(diagnostics),
        models=models,
        model_certificates=model_certificates,
    )
    if until < Stage.EMIT or not result.ok:
        return result
    from .backend.emit import generate, render_model  # jinja2 and black load only to write files
    from .backend.formatting import BLACK_DEFAULTS

    formatting = formatting or BLACK_DEFAULTS

    outputs: dict[str, str] = {}
    source_name = Path(source.path).name
    for net, cert in zip(networks, certificates):
        if models_only is None:
            outputs.update(generate(net, cert, source_name, source.sha256, formatting))
    figures = []
    for model, model_cert in zip(models, model_certificates):
        plan = lower_model(model, by_name)
        files, measured = render_model(
            plan, by_network, model_cert, source_name, source.sha256, formatting
        )
        outputs.update(files)
        figures.append((measured.total_flops, measured.total_params))
        if measured.failure is not None:
            diagnostics.append(_unmeasured(model, measured.failure))
    return Result(
        source,
        networks,
        certificates,
        outputs,
        tuple(diagnostics),
        models,
        model_certificates,
        tuple(figures),
    )


def _unmeasured(model, failure: str) -> Diagnostic:
    """A model whose FLOPS (or PARAMS) are written as None: measured on the meta device
    only, never on a real allocation."""
    return Diagnostic(
        Severity.WARNING,
        model.span,
        f"model {model.name}: FLOPS and PARAMS are measured on the meta device, and {failure};"
        " the file writes None for what was not measured",
        "a custom block that reads tensor values cannot run on the meta device",
    )
