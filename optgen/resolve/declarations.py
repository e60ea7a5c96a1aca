"""The declarations of an item besides its params and update: the grouping of a network's
or a model's declarations (each at most once where it must be), class and file names,
blocks (of a registered kind, or custom ones with their "pkg.module:Class"), `solver` and
`backward` with their options, and the memory modes (`checkpoint`, `backward reversible`)."""

from __future__ import annotations

import keyword

import sympy

from .. import ir, naming
from ..ir import DIM
from ..kinds.blocks import (
    BACKWARD_KINDS,
    BLOCK_KINDS,
    INTEGER_OPTIONS,
    REVERSIBLE,
    SOLVER_KINDS,
    ArgKind,
    Layout,
)
from ..source import Span
from ..syntax import ast
from .context import MAX_DEPTH, Context, Job, _did_you_mean, _show
from .scalars import ScalarResolver

# Options and defaults of each solver and backward mode, from the registry.
SOLVERS = {name: dict(kind.options) for name, kind in SOLVER_KINDS.items()}
BACKWARDS = {name: dict(kind.options) for name, kind in BACKWARD_KINDS.items()}


class DeclarationResolver(Job):
    """Names, blocks, solvers and memory modes of networks and models."""

    def __init__(self, ctx: Context, scalars: ScalarResolver):
        super().__init__(ctx)
        self.scalars = scalars

    def grouped(self, node, what: str, once: dict[type, str], hint: str) -> dict[type, list]:
        """The declarations of network or model `node` by type. Of each type in `once`, a
        declaration after the first is reported, labelled `once[type]`, with the hint
        `hint.format(label)`."""
        name = node.name.id
        decls: dict[type, list] = {}
        for d in node.decls:
            decls.setdefault(type(d), []).append(d)
        for kind, label in once.items():
            for extra in decls.get(kind, [])[1:]:
                self.report.error(
                    extra.span,
                    f"'{label}' is declared twice in {what} {name}",
                    hint.format(label),
                )
        return decls

    def check_class_name(self, ident: ast.Ident, what: str, example: str) -> None:
        """A network or model name becomes a class name: CamelCase, not a keyword."""
        name = ident.id
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            self.report.error(
                ident.span,
                f"{what} name '{name}' is a Python keyword",
                f"pick a CamelCase class name such as {example}",
            )
        elif not name[0].isupper():
            self.report.error(
                ident.span,
                f"{what} name '{name}' is not a CamelCase class name",
                f"write {name[0].upper() + name[1:]}",
            )
        elif name in naming.reserved(
            naming.Reserved.FILE_BINDING
        ) or name == naming.certificate_constant(name):
            self.report.error(
                ident.span,
                f"{what} name '{name}' is a name the generated code already uses",
                f"the generated module and its tests define or import {name}; "
                f"pick another name, such as {name}Rule",
            )
        else:
            self.check_file_names(ident, what)

    def check_file_names(self, ident: ast.Ident, what: str) -> None:
        """The files `<stem>.py` and `test_<stem>.py` must be importable, shadow no module
        and fit in a file name."""
        test_file = naming.test_file(ident.id)
        if len(test_file.encode("utf-8")) > naming.MAX_FILE_NAME_BYTES:
            self.report.error(
                ident.span,
                f"{what} name '{ident.id[:40]}...' is too long: its test file name would be "
                f"{len(test_file.encode('utf-8'))} bytes",
                f"file names hold at most {naming.MAX_FILE_NAME_BYTES} bytes; "
                f"use a name of at most {naming.MAX_FILE_NAME_BYTES - len('test_.py')} characters",
            )
            return
        for module in (name.removesuffix(".py") for name in naming.output_files(ident.id)):
            if keyword.iskeyword(module):
                self.report.error(
                    ident.span,
                    f"{what} {ident.id} would write {module}.py, and '{module}' is a Python "
                    "keyword: its test could not import it",
                    f"pick another name, such as {ident.id}Rule",
                )
            elif module in naming.reserved(naming.Reserved.MODULE_NAME):
                self.report.error(
                    ident.span,
                    f"{what} {ident.id} would write {module}.py, which shadows the module "
                    f"'{module}' for code beside it (the generated tests import torch, os, ...)",
                    f"pick another name, such as {ident.id}Rule",
                )

    def block(self, d: ast.BlockDecl, shared: bool) -> ir.Block:
        kind_name = d.kind.id
        if kind_name not in BLOCK_KINDS:
            self.fail(
                d.kind.span,
                f"unknown block kind '{kind_name}'",
                _did_you_mean(kind_name, BLOCK_KINDS) or f"known kinds: {', '.join(BLOCK_KINDS)}",
            )
        kind = BLOCK_KINDS[kind_name]
        args: dict[str, object] = {}
        target = None
        spec = {**kind.args, **kind.meta_args}
        if kind.takes_target:
            positional = [a for a in d.args if a.key is None]
            if not positional:
                self.fail(
                    d.kind.span,
                    f"{kind_name} block {d.name.id} needs the class as its first argument",
                    f'write {kind_name}("pkg.module:Class")',
                )
            target = self.custom_target(d.name.id, positional[0].value)
            if len(positional) > 1:
                self.fail(
                    positional[1].span, f"{kind_name} takes one positional argument, the class"
                )
        for a in d.args:
            if a.key is None:
                if not kind.takes_target:
                    self.fail(a.span, f"{kind_name} takes keyword arguments only (key=value)")
                continue
            key = a.key.id
            if key in args:
                self.fail(a.key.span, f"argument '{key}' is given twice")
            if key not in spec:
                if kind.takes_target and keyword.iskeyword(key):
                    self.fail(
                        a.key.span,
                        f"'{key}' is a Python keyword: the class of {kind_name} block "
                        f"{d.name.id} cannot take it as a keyword argument",
                        "rename the argument of the class",
                    )
                if kind.takes_target and key == "self":
                    # Class(dim, self=...) binds `self` twice, whatever the class.
                    self.fail(
                        a.key.span,
                        f"'self' is the instance of the class of {kind_name} block "
                        f"{d.name.id}: it cannot be a keyword argument",
                        "rename the argument of the class",
                    )
                if kind.takes_target:  # the user's class takes every other keyword
                    args[key] = self.custom_arg(a)
                    continue
                self.fail(
                    a.key.span,
                    f"{kind_name} has no argument '{key}'",
                    _did_you_mean(key, spec)
                    or (
                        f"its arguments: {', '.join(spec)}"
                        if spec
                        else f"{kind_name} takes no arguments"
                    ),
                )
            arg = spec[key]
            if arg.kind is ArgKind.SPACE:
                args[key] = self.space_arg(a, kind_name, d.name.id)
            elif arg.kind is ArgKind.CHOICE:
                word = (
                    a.value.value
                    if isinstance(a.value, ast.StringLit)
                    else getattr(a.value, "id", None)
                )
                if word is None or word not in arg.choices:
                    shown = word if word is not None else self.text(a.value)
                    self.fail(
                        a.value.span,
                        f"'{shown}' is not a valid {key} for {kind_name}",
                        _did_you_mean(str(shown), arg.choices)
                        or f"choose one of: {', '.join(arg.choices)}",
                    )
                args[key] = word
            else:
                if isinstance(a.value, ast.StringLit):
                    self.fail(
                        a.value.span, f"{key} must be an integer expression in dim, not a string"
                    )
                value = sympy.expand(
                    self.scalars.scalar(a.value, self.size_symbols(), f"the argument {key}")
                )
                self._check_int_arg(value, a.value.span, key)
                if arg.odd and not value.free_symbols and value % 2 == 0:
                    self.fail(
                        a.value.span,
                        f"{key} of {kind_name} must be odd, got {value}",
                        f"'same' padding keeps the size only for odd kernels: use {value + 1}",
                    )
                args[key] = value
        layout = kind.layout or Layout(args.get("layout", Layout.VECTOR))
        if kind.takes_target:  # the user's class keeps its own defaults
            full = {k: v.default for k, v in kind.meta_args.items()}
        else:  # every argument spelled out, "dim" defaults as the size of the block's space
            own = ir.size_symbol(str(args.get("space", ir.DIM_SPACE)))
            full = {
                k: (v.default if v.kind is not ArgKind.INT or v.default != "dim" else own)
                for k, v in spec.items()
            }
        full.update(args)
        return ir.Block(
            d.name.id, kind_name, tuple(sorted(full.items())), shared, layout, d.span, target
        )

    def size_symbols(self) -> dict[str, sympy.Symbol]:
        """The sizes an integer block argument may use: dim and the network's own."""
        return {size: ir.size_symbol(size) for size in (ir.DIM_SPACE, *self.ctx.sizes)}

    def space_arg(self, a: ast.BlockArg, kind_name: str, block: str) -> str:
        """`space=m`, `from=dim`, `to=m`: dim, or a size a state of the network is declared
        with (`state y: m`)."""
        word = a.value.id if isinstance(a.value, ast.Name) else None
        if word == ir.DIM_SPACE or word in self.ctx.sizes:
            return word
        spaces = (ir.DIM_SPACE, *self.ctx.sizes)
        self.fail(
            a.value.span,
            f"{a.key.id}={self.text(a.value)}: block {block} = {kind_name}(...) names a space "
            f"the network does not have (its spaces: {', '.join(spaces)})",
            (_did_you_mean(word, spaces) if word else None)
            or "a space is dim, or the size of a state declared as state y: m",
        )

    def custom_target(self, block: str, literal: ast.StringLit) -> str:
        """The "pkg.module:Class" of a custom block, checked part by part."""
        text = literal.value
        hint = 'write custom("pkg.module:Class")'
        module, colon, class_name = text.partition(":")
        if not colon:
            head, dot, tail = text.rpartition(".")
            if dot and head and tail:
                hint += f', here custom("{head}:{tail}")'
            self.fail(
                literal.span,
                f"custom block {block}: '{text}' has no ':' between the module and the class",
                hint,
            )
        if ":" in class_name:
            self.fail(literal.span, f"custom block {block}: '{text}' has more than one ':'", hint)
        if not module:
            self.fail(
                literal.span, f"custom block {block}: '{text}' has no module before the ':'", hint
            )
        if not class_name:
            self.fail(
                literal.span, f"custom block {block}: '{text}' has no class after the ':'", hint
            )
        if not all(part.isidentifier() for part in module.split(".")):
            self.fail(
                literal.span,
                f"custom block {block}: the module '{module}' is not a dotted Python name",
                "join Python names with '.', like torch.nn",
            )
        if not class_name.isidentifier():
            self.fail(
                literal.span,
                f"custom block {block}: the class '{class_name}' is not a Python name",
                "name one class of the module after the ':', like torch.nn:Identity",
            )
        return text

    def custom_arg(self, a: ast.BlockArg):
        if isinstance(a.value, ast.StringLit):
            return a.value.value
        if isinstance(a.value, ast.Name) and a.value.id in ("true", "false", "none"):
            return {"true": True, "false": False, "none": None}[a.value.id]
        return sympy.nsimplify(
            self.scalars.scalar(a.value, {"dim": DIM}, f"the argument {a.key.id}"), rational=True
        )

    def _check_int_arg(self, value: sympy.Expr, span: Span, key: str) -> None:
        if value.free_symbols - set(self.size_symbols().values()):
            self.fail(span, f"{key} may only use dim and numbers")
        if not value.free_symbols and (not value.is_integer or value <= 0):
            self.fail(span, f"{key} must be a positive integer, got {value}")

    def solver(self, d: ast.SolverDecl) -> ir.SolverSpec:
        table = SOLVERS if d.role == "solver" else BACKWARDS
        name = d.name.id
        if name not in table:
            self.fail(
                d.name.span,
                f"unknown {d.role} '{name}'",
                _did_you_mean(name, table) or f"known: {', '.join(table)}",
            )
        options = dict(table[name])
        for opt in d.options:
            key = opt.key.id
            if key not in table[name]:
                self.fail(
                    opt.key.span,
                    f"{d.role} {name} has no option '{key}'",
                    _did_you_mean(key, table[name])
                    or (
                        f"its options: {', '.join(table[name])}"
                        if table[name]
                        else f"{name} takes no options"
                    ),
                )
            value = self.scalars.scalar(opt.value, {}, f"the option {key}")
            if value <= 0:
                self.fail(opt.value.span, f"option {key} must be positive")
            if key in INTEGER_OPTIONS:
                if not value.is_integer:
                    self.fail(opt.value.span, f"option {key} must be an integer")
                options[key] = int(value)
            else:
                options[key] = float(value)
        return ir.SolverSpec(
            name, tuple((k, v) for k, v in options.items() if v is not None), d.span
        )

    def checkpoint(self, d: ast.CheckpointDecl) -> int:
        """`checkpoint N`: a positive whole number of layers per recomputed group."""
        value = self.scalars.scalar(d.value, {}, "checkpoint")
        if not value.is_integer:
            self.fail(
                d.value.span,
                f"checkpoint takes a whole number of layers, not {_show(float(value))}",
                "e.g. checkpoint 2: the layers are recomputed in groups of 2 in backward",
            )
        if value <= 0:
            self.fail(
                d.value.span,
                f"checkpoint {int(value)} must be a positive number of layers",
                "write checkpoint 1 to recompute every layer, or drop the line to keep them all",
            )
        return int(min(value, MAX_DEPTH))

    def check_memory_modes(self, name: str, decls: dict, solves: bool, kind: str) -> None:
        """`backward reversible` and `checkpoint` are for explicit rules, one at a time."""
        backwards = [d for d in decls.get(ast.SolverDecl, []) if d.role == "backward"]
        reversible = next((d for d in backwards if d.name.id == REVERSIBLE), None)
        checkpoint = next(iter(decls.get(ast.CheckpointDecl, [])), None)
        if reversible is not None and solves:
            self.report.error(
                reversible.span,
                f"backward reversible is for explicit rules: network {name} is {kind}",
                "an implicit layer has no update to undo; use backward implicit, whose memory"
                " does not grow with the solver's iterations",
            )
        if checkpoint is not None and solves:
            self.report.error(
                checkpoint.span,
                f"checkpoint is for explicit rules: network {name} is {kind}",
                "backward implicit already keeps no solver iteration for backward",
            )
        if reversible is not None and checkpoint is not None and not solves:
            self.report.error(
                checkpoint.span,
                f"network {name} declares both checkpoint and backward reversible",
                "backward reversible keeps no layer for backward already: drop checkpoint",
            )

    @staticmethod
    def memory_spans(decls: dict) -> dict:
        spans = {}
        for d in decls.get(ast.SolverDecl, []):
            if d.role == "backward" and d.name.id == REVERSIBLE:
                spans["reversible"] = d.span
        for d in decls.get(ast.CheckpointDecl, []):
            spans["checkpoint"] = d.span
        return spans
