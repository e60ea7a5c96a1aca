"""AST to IR: names, lags, assign-once, the scalar-coefficient rule, block kinds.

Every check here records a located diagnostic whose message names the offending
sub-expression, in the spirit of cvxpy's DCP errors. Checking goes on after an error,
one unit at a time (a network, a declaration, an update statement, an init), so that
every error of a file is reported at once; see `context.Job`.

This module owns the file: its items and the files they write, checked before each
network and then each model is resolved. One job object per kind of check does the
work, all sharing one `Context`: scalars, expressions, params, declarations, networks
(with their updates), models (with their parts).
"""

from __future__ import annotations

from .. import ir, naming
from ..source import SourceFile, Span
from ..syntax import ast
from .context import Context, Job
from .declarations import DeclarationResolver
from .expressions import ExpressionResolver
from .model import ModelResolver
from .network import NetworkResolver, UpdateResolver
from .params import ParamResolver
from .parts import PartResolver
from .scalars import ScalarResolver

# A limit on the size of one file (docs/robustness.md, "Limits"), as for its items.
MAX_ITEMS = 64  # networks and models of one file


class Resolver(Job):
    """Checks the networks and models of one file, recording every error in `report`."""

    def __init__(self, source: SourceFile):
        super().__init__(Context(source))
        ctx = self.ctx
        self.scalars = ScalarResolver(ctx)
        self.expressions = ExpressionResolver(ctx, self.scalars)
        self.params = ParamResolver(ctx, self.scalars)
        self.declarations = DeclarationResolver(ctx, self.scalars)
        self.updates = UpdateResolver(ctx, self.scalars, self.expressions)
        self.networks = NetworkResolver(ctx, self.declarations, self.params, self.updates)
        self.parts = PartResolver(ctx, self.scalars)
        self.models = ModelResolver(ctx, self.declarations, self.parts)

    def network(self, node: ast.Network) -> ir.Network | None:
        """The IR of one network, or None when it has errors (all recorded in `report`)."""
        return self.networks.network(node)

    def model(
        self, node: ast.Model, networks: dict[str, ir.Network], declared: dict[str, set[str]]
    ) -> ir.Model | None:
        """The IR of one model, or None when it has errors (all recorded in `report`)."""
        return self.models.model(node, networks, declared)


def resolve(module: ast.Module, source: SourceFile, warnings: list | None = None) -> ir.Program:
    """Check every network and model of a parsed file and return their IR (warnings
    appended to `warnings`). The models are checked after every network.

    Raises one `OptgenError` holding every error of the file, in source order.
    """
    resolver = Resolver(source)
    # Every item writes the file of its snake_case name: no two may share one.
    items = sorted(
        [("network", n) for n in module.networks] + [("model", m) for m in module.models],
        key=lambda item: (item[1].span.line, item[1].span.col),
    )
    if len(items) > MAX_ITEMS:
        what, node = items[MAX_ITEMS]
        resolver.report.error(
            node.name.span,
            f"this file holds more than {MAX_ITEMS} networks and models",
            "split it into several .opt files",
        )
        resolver.report.raise_if_errors()
    seen: dict[str, tuple[str, str]] = {}
    names: dict[str, set[str]] = {"network": set(), "model": set()}
    written: dict[str, tuple[str, str]] = {}  # every output file: the item that writes it
    for what, node in items:
        name = node.name.id
        files = naming.output_files(name)
        file_name = naming.snake_case(name)
        clash = next((written[f] for f in files if f in written), None)
        hint = None
        if name in names[what]:
            message = f"{what} {name} is defined twice"
        elif name in names["model" if what == "network" else "network"]:
            other_what = "model" if what == "network" else "network"
            message = f"{what} {name} has the name of {other_what} {name}"
            hint = "a model and a network of one file need different names"
        elif file_name in seen:
            other_what, other = seen[file_name]
            message = f"{what} {name} writes the same file as {other_what} {other} ({file_name}.py)"
        elif clash is not None:
            shared = next(f for f in files if f in written)
            message = f"{what} {name} writes the same file as {clash[0]} {clash[1]} ({shared})"
            hint = "a network Foo writes foo.py and test_foo.py: rename one of the two"
        else:
            message = None
        if message is not None:
            resolver.report.error(node.name.span, message, hint)
        for f in files:
            written.setdefault(f, (what, name))
        seen.setdefault(file_name, (what, name))
        names[what].add(name)
    networks = []
    for node in module.networks:
        net = resolver.attempt(resolver.network, node)  # checked even after an earlier failed
        if net is not None:
            networks.append(net)
    by_name = {net.name: net for net in reversed(networks)}  # the first of a repeated name
    models = []
    for node in module.models:
        model = resolver.attempt(resolver.model, node, by_name, names)
        if model is not None:
            models.append(model)
    if not module.networks and not module.models:
        resolver.report.error(
            Span.point(1, 1),
            "no network in this file",
            "a file holds one or more `network Name { ... }` items",
        )
    resolver.report.raise_if_errors()
    if warnings is not None:
        warnings.extend(resolver.report.warnings)
    return ir.Program(tuple(networks), tuple(models))
