"""One network: its assembly from its declarations (states, layers, blocks, params, init,
update, output, solver, memory modes) into `ir.Network`, the checks of an equilibrium, and
(`UpdateResolver`) the init and the statements of the update: targets, assign-once, the
next iterate read inside a block call of an implicit rule."""

from __future__ import annotations

import difflib

import sympy

from .. import ir, naming, schedules
from ..errors import Abandon
from ..kinds.blocks import ELEMENTWISE_MAPS, LAYOUTS, REVERSIBLE
from ..source import Span
from ..syntax import ast
from .context import MAX_DEPTH, RESERVED, Context, Job, _did_you_mean
from .declarations import DeclarationResolver
from .expressions import ExpressionResolver, Scalar, Scope
from .params import ParamResolver
from .scalars import ScalarResolver
from .values import ScalarLike

DEFAULT_DEPTH = 8
# The declarations a network holds at most once (`solver` and `backward` share a type).
ONCE = {
    ast.StateDecl: "state",
    ast.LayersDecl: "layers",
    ast.UpdateDecl: "update",
    ast.OutputDecl: "output",
    ast.CheckpointDecl: "checkpoint",
}
# Limits on the size of one network (docs/robustness.md, "Limits"): the analysis and the
# generated code grow faster than linearly past them, so a larger input is refused with a
# located error instead of taking minutes and gigabytes.
MAX_STATES = 512  # states of one network
MAX_STATEMENTS = 2048  # statements of one update


class NetworkResolver(Job):
    """The IR of one network, each declaration checked by the job it belongs to."""

    def __init__(
        self,
        ctx: Context,
        declarations: DeclarationResolver,
        params: ParamResolver,
        updates: UpdateResolver,
    ):
        super().__init__(ctx)
        self.declarations = declarations
        self.params = params
        self.updates = updates
        self.spaces = updates.expressions.spaces

    def network(self, node: ast.Network) -> ir.Network | None:
        """The IR of one network, or None when it has errors (all recorded in `report`)."""
        errors_before = len(self.report.errors)
        self.ctx.poisoned = set()
        name = node.name.id
        self.declarations.check_class_name(node.name, "network", "Nesterov")
        decls = self.declarations.grouped(node, "network", ONCE, "merge the two declarations")
        for role in ("solver", "backward"):
            dup = [d for d in decls.get(ast.SolverDecl, []) if d.role == role]
            for extra in dup[1:]:
                self.report.error(extra.span, f"'{role}' is declared twice in network {name}")
        has_states = ast.StateDecl in decls
        if not has_states:
            self.report.error(
                node.name.span, f"network {name} declares no state", "add a line: state x"
            )
        if ast.UpdateDecl not in decls:
            self.report.error(
                node.name.span, f"network {name} has no update", "add: update { x+ = x - t*T(x) }"
            )

        taken: dict[str, str] = {}

        def claim(ident: ast.Ident, what: str) -> bool:
            """Whether the name is this declaration's (an earlier one may have taken it)."""
            word = ident.id
            if word in taken:
                self.report.error(ident.span, f"'{word}' is already declared as a {taken[word]}")
                if not what == taken[word] == "state":
                    self.poisoned.add(word)  # two meanings: which one a use means is unknown
                return False
            if word in RESERVED or word in ELEMENTWISE_MAPS:
                why = (
                    f"a word of the language ({RESERVED[word]})"
                    if word in RESERVED
                    else "a built-in map of the language"
                )
                self.report.error(ident.span, f"'{word}' is {why} and cannot name a {what}")
                # Not declared: later statements about it would only repeat this error.
                self.poisoned.add(word)
                return False
            taken[word] = what
            return True

        if has_states and len(decls[ast.StateDecl][0].names) > MAX_STATES:
            extra = decls[ast.StateDecl][0].names[MAX_STATES]
            self.report.error(
                extra.span,
                f"network {name} declares more than {MAX_STATES} states",
                "the analysis and the generated layers grow with the square of the states",
            )
        states = []
        state_decl = decls[ast.StateDecl][0] if has_states else ast.StateDecl((), node.span)
        for ident in state_decl.names:
            if claim(ident, "state"):
                states.append(ident.id)
        state_sizes = self.spaces.declared(state_decl, decls.get(ast.InitDecl, []), claim)

        depth, equilibrium = DEFAULT_DEPTH, False
        if ast.LayersDecl in decls:
            layers = decls[ast.LayersDecl][0]
            if layers.equilibrium:
                equilibrium, depth = True, 1
            else:
                depth = layers.depth
                if not 1 <= depth <= MAX_DEPTH:
                    self.report.error(
                        layers.span,
                        f"layers {depth} is out of range",
                        f"use between 1 and {MAX_DEPTH} layers",
                    )
                    depth = min(max(depth, 1), MAX_DEPTH)
        self.ctx.depth = depth  # the layers the fixed arguments of maps are checked for

        blocks: dict[str, ir.Block] = {}
        block_names: set[str] = set()  # every block of the network, a failed one included
        for d in decls.get(ast.BlockDecl, []):
            owned = claim(d.name, "block")
            if d.name.id.startswith("_") or d.name.id in naming.reserved(naming.Reserved.BLOCK_KEY):
                self.report.error(
                    d.name.span,
                    f"block name '{d.name.id}' cannot be a key of the generated module.blocks (an nn.ModuleDict)",
                    "rename the block: no leading underscore, not an nn.ModuleDict attribute such as keys or update",
                )
            block = self.attempt(self.declarations.block, d, d.shared or equilibrium)
            if owned:
                block_names.add(d.name.id)
                if block is not None:
                    blocks[d.name.id] = block
        blocks = self.spaces.operators_on_tokens(blocks)
        layouts = {b.layout for b in blocks.values()}
        if len(layouts) > 1:
            first = next(iter(blocks.values()))
            odd = next(b for b in blocks.values() if b.layout != first.layout)
            self.report.error(
                odd.span,
                f"block '{odd.name}' takes {LAYOUTS[odd.layout]} inputs but block '{first.name}' takes {LAYOUTS[first.layout]}",
                "all blocks of one network share a layout",
            )

        # Every param of the network; one whose declaration failed is a placeholder,
        # with its name and declared options but an unknown value.
        params: dict[str, ir.Param] = {}
        unknown: set[str] = set()
        self.ctx.schedules = {}
        param_decls = decls.get(ast.ParamDecl, [])
        units = self.params.param_units(param_decls)
        owned_params = [claim(d.name, "param") for d, _ in units]
        declared = {d.name.id for d in param_decls}
        self.ctx.pending = {
            d.name.id: schedules.Recurrence.pending(d.name.id) for d, eq in units if eq
        }
        self.ctx.coupled = []
        for (d, equations), owned in zip(units, owned_params):
            if equations is None:
                param = self.attempt(self.params.param, d, params, declared, depth, unknown)
            elif equations:
                param = self.attempt(
                    self.params.recursive_param, *equations, params, declared, depth, unknown
                )
            else:
                param = None  # a broken recursive schedule, already reported
            if not owned:
                continue
            if equations is None:
                self.params.check_param_attribute(d)
            if param is None:
                unknown.add(d.name.id)
                param = ir.Param(
                    d.name.id, sympy.Integer(0), d.learnable, d.per_layer, None, d.positive, d.span
                )
            params[d.name.id] = param
        self.params.check_coupled(depth, unknown)
        self.params.check_channel_axis(param_decls, decls.get(ast.BlockDecl, []), blocks)

        init: list[ir.InitAssign] = []
        statements: list[ir.Assign] = []
        reasons: list[str] = []
        uses_input = False
        if has_states:
            init = self.updates.init(
                decls.get(ast.InitDecl, []), states, params, state_sizes, block_names
            )
        if has_states and ast.UpdateDecl in decls:
            statements, reasons, uses_input = self.updates.update(
                decls[ast.UpdateDecl][0], states, params, (block_names, blocks), taken, state_sizes
            )

        output = next((s for s in states if s not in state_sizes), None)
        if states and output is None:
            self.attempt(self.spaces.no_output, state_decl, name)
        if ast.OutputDecl in decls and has_states:
            out = decls[ast.OutputDecl][0]
            if out.name.id in state_sizes:
                self.attempt(self.spaces.output, out.name, state_sizes[out.name.id])
            elif out.name.id in states:
                output = out.name.id
            elif out.name.id not in self.poisoned:
                self.report.error(
                    out.name.span,
                    f"output '{out.name.id}' is not a state",
                    _did_you_mean(out.name.id, states),
                )

        solver = backward = None
        for d in decls.get(ast.SolverDecl, []):
            spec = self.attempt(self.declarations.solver, d)
            if d.role == "solver":
                solver = solver or spec
            else:
                backward = backward or spec
        implicit = bool(reasons)
        if equilibrium:
            known = {n: p for n, p in params.items() if n not in unknown}
            self.check_equilibrium(node, statements, known, implicit)
        reversible = backward is not None and backward.name == REVERSIBLE
        data_spans = self.updates.data_spans if statements else []
        what = _not_plain(equilibrium, implicit, reversible)
        if data_spans and what:
            self.report.error(
                data_spans[0],
                f"dot and norm scale explicit layers only, and network {name} is {what}",
                "undo and solve need coefficients that do not depend on the data: "
                + (
                    "drop 'backward reversible'"
                    if reversible and not implicit
                    else "write the rule explicitly"
                ),
            )
        checkpoint = None
        if ast.CheckpointDecl in decls:
            checkpoint = self.attempt(self.declarations.checkpoint, decls[ast.CheckpointDecl][0])
        what = _not_plain(equilibrium, implicit, reversible, bool(checkpoint))
        if state_sizes and what:
            self.attempt(self.spaces.explicit_only, state_decl, name, what)
        self.declarations.check_memory_modes(
            name, decls, implicit or equilibrium, "an equilibrium" if equilibrium else "implicit"
        )
        if len(self.report.errors) > errors_before:
            return None
        for param_name, span, hint in unread_params(decls):
            self.report.warn(span, f"param '{param_name}' is declared but never read", hint)
        for d in decls.get(ast.SolverDecl, []):
            if not (implicit or equilibrium) and not (reversible and d.role == "backward"):
                self.report.warn(d.span, f"'{d.role}' has no effect: network {name} is explicit")
                break
        if equilibrium and not uses_input:
            self.report.warn(
                node.name.span,
                f"equilibrium network {name} never reads 'input' in its update",
                "inject the input, e.g. x+ = x - t*T(x) + t*(input - x)",
            )

        rule = "; ".join(s.text for s in decls[ast.UpdateDecl][0].statements)
        net = ir.Network(
            name=name,
            states=tuple(states),
            init=tuple(init),
            params=tuple(params.values()),
            blocks=tuple(blocks.values()),
            depth=depth,
            equilibrium=equilibrium,
            statements=tuple(statements),
            output=output,
            implicit=implicit,
            implicit_reasons=tuple(dict.fromkeys(reasons)),
            rule=rule,
            span=node.span,
            source_text=node.text,
            solver=solver,
            backward=backward,
            checkpoint=checkpoint,
            spans={"name": node.name.span, **self.declarations.memory_spans(decls)},
            state_sizes=tuple(state_sizes.items()),
        )
        ir.validate(net)
        return net

    def check_equilibrium(self, node: ast.Network, statements, params, implicit: bool) -> None:
        """An equilibrium iterates one shared update to its fixed point: no layer index, no history sums."""
        if implicit:
            self.report.error(
                node.name.span,
                f"equilibrium network {node.name.id} also applies a block to a next iterate",
                "an equilibrium is solved as a whole; write the update explicitly",
            )
        for p in params.values():
            if p.depends_on_k or p.per_layer:
                self.report.error(
                    p.span,
                    (
                        f"param {p.name} depends on the layer, but an equilibrium network has no layers"
                        if ir.K in p.value.free_symbols or p.per_layer
                        else f"param {p.name} depends on L, the depth, but an equilibrium network"
                        " has no depth"
                    ),
                    "use a constant value",
                )
        for st in statements:
            self.attempt(self.check_equilibrium_statement, st)

    def check_equilibrium_statement(self, st: ir.Assign) -> None:
        for atom in st.form.walk():
            if isinstance(atom, (ir.HistorySum, ir.Initial)) or (
                isinstance(atom, ir.Local) and atom.lag < 0
            ):
                self.fail(
                    st.span,
                    f"'{atom.show()}' has no meaning in an equilibrium network",
                    "an equilibrium has no layer history",
                )
        for _, coef in st.form.terms:
            if ir.K in coef.free_symbols:
                self.fail(st.span, "k has no meaning in an equilibrium network")
            if ir.L in coef.free_symbols:
                self.fail(st.span, "L has no meaning in an equilibrium network: it has no depth")


class UpdateResolver(Job):
    """The init and the update of one network."""

    def __init__(self, ctx: Context, scalars: ScalarResolver, expressions: ExpressionResolver):
        super().__init__(ctx)
        self.scalars = scalars
        self.expressions = expressions
        self.data_spans: list = []  # where the last update read dot and norm

    def init(
        self,
        decls: list[ast.InitDecl],
        states: list[str],
        params: dict[str, ir.Param],
        state_sizes: dict[str, str],
        blocks: set[str],
    ) -> list[ir.InitAssign]:
        given: dict[str, ast.InitAssign] = {}
        for d in decls:
            for a in d.assigns:
                if a.target.id in self.poisoned:
                    continue
                if a.target.id not in states:
                    self.report.error(
                        a.target.span,
                        f"init of '{a.target.id}', which is not a state",
                        _did_you_mean(a.target.id, states),
                    )
                elif a.target.id in given:
                    self.report.error(a.target.span, f"state '{a.target.id}' is initialised twice")
                else:
                    given[a.target.id] = a
        ready = {s for s in states if s not in given}
        result = [
            ir.InitAssign(s, ir.LinearForm.of(ir.InputValue()), Span.point(1, 1))
            for s in states
            if s not in given
        ]
        pending = list(given.values())
        while pending:
            progress = False
            for a in list(pending):
                if all(s in ready for s in _state_names(a.value, states)):
                    form = self.attempt(self.init_form, a.value, states, params, blocks)
                    if form is not None:
                        assign = ir.InitAssign(a.target.id, form, a.span)
                        if self.attempt(self.expressions.spaces.init, assign, state_sizes):
                            result.append(assign)
                    ready.add(a.target.id)  # a failed init still defines its state
                    pending.remove(a)
                    progress = True
            if not progress:
                # Report the cycle once; the inits that wait on it are still checked.
                a = pending.pop(0)
                self.report.error(
                    a.span, f"the init of '{a.target.id}' depends on itself through other inits"
                )
                ready.add(a.target.id)
        return result

    def init_form(
        self, node, states: list[str], params: dict[str, ir.Param], blocks: set[str]
    ) -> ir.LinearForm:
        if isinstance(node, ast.Number):
            if self.scalars.number(node) == 0:
                return ir.LinearForm()
            self.fail(
                node.span,
                f"init to the number {node.text}: a state starts as a tensor",
                "use 0, input, or another state",
            )
        if isinstance(node, ast.Name):
            if node.id == "input":
                return ir.LinearForm.of(ir.InputValue())
            if node.id in states:
                return ir.LinearForm.of(ir.Initial(node.id))
            self.fail(
                node.span,
                f"'{node.id}' cannot be used in an init",
                "an init may use input, states, 0 and params",
            )
        scope = Scope(tuple(states), params, blocks, data_allowed=False)
        scope.assigned = set()
        value = self.expressions.value(node, scope)
        if isinstance(value, Scalar):
            if value.expr == 0:
                return ir.LinearForm()
            self.fail(node.span, "an init must be a tensor expression (input, a state, 0)")
        # In an init, a state name means its initial value.
        terms = {}
        for atom, coef in value.form.terms:
            if isinstance(atom, ir.StateAt) and atom.lag == 0:
                atom = ir.Initial(atom.name)
            elif not isinstance(atom, ir.InputValue):
                self.fail(
                    node.span,
                    f"'{atom.show()}' cannot be used in an init",
                    "an init may use input, states, 0 and params",
                )
            terms[atom] = terms.get(atom, 0) + coef
        for coef in terms.values():
            layered = [
                p.name
                for p in params.values()
                if p.symbol in coef.free_symbols and (p.depends_on_k or p.per_layer)
            ]
            if ir.K in coef.free_symbols or layered:
                what = "k" if ir.K in coef.free_symbols else f"the per-layer param {layered[0]}"
                self.fail(
                    node.span,
                    f"an init cannot use {what}: it runs once, before the first layer",
                    "use numbers and params with one value for every layer",
                )
        return ir.LinearForm.from_dict(terms)

    def update(
        self, d: ast.UpdateDecl, states: list[str], params, blocks, taken, state_sizes
    ) -> tuple[list[ir.Assign], list[str], bool]:
        """`blocks`: the names of every block declared, and the blocks that resolved."""
        names, resolved = blocks
        scope = Scope(
            tuple(states), params, names, state_sizes=state_sizes, resolved_blocks=resolved
        )
        self.ctx.local_names = set()
        statements = []
        if len(d.statements) > MAX_STATEMENTS:
            self.report.error(
                d.statements[MAX_STATEMENTS].span,
                f"the update has more than {MAX_STATEMENTS} statements",
                "split the rule into several networks (stages of a model)",
            )
            return [], [], False
        for stmt in d.statements:
            assign = self.attempt(self.statement, stmt, scope, taken)
            if assign is not None:
                statements.append(assign)
        missing = [s for s in states if s not in scope.assigned and s not in self.poisoned]
        if missing:
            self.report.error(
                d.span,
                f"state '{missing[0]}' is never assigned in the update",
                f"add a statement {missing[0]}+ = ... (write {missing[0]}+ = {missing[0]} to keep it)",
            )
        self.data_spans = scope.data_spans
        return statements, scope.implicit_reasons, scope.uses_input

    def statement(self, stmt: ast.Statement, scope: Scope, taken) -> ir.Assign:
        """One update statement; failed or not, it defines its target for the next ones."""
        try:
            target, is_state, tspan = self.target(stmt.target, scope)
        except Abandon:
            name = stmt.target.id
            if name in scope.states:
                scope.assigned.add(name)
            elif name not in (*scope.params, *scope.blocks, *scope.locals_):
                self.poisoned.add(name)  # `z+ = ...` with no state z: what z is, is unknown
            raise
        scope.current_target = target
        try:
            if is_state:
                if target in scope.assigned:
                    self.fail(
                        tspan,
                        f"state '{target}' is assigned twice in one update",
                        "each state gets one new value per layer; use a local for intermediate values",
                    )
            else:
                if target in scope.locals_ or target in scope.scalar_locals:
                    self.fail(
                        tspan,
                        f"local '{target}' is assigned twice in one update",
                        "give the second value another name",
                    )
                if target in taken:
                    self.fail(
                        tspan,
                        f"'{target}' is a {taken[target]}; it cannot be assigned in the update",
                    )
                if target in RESERVED or target in ELEMENTWISE_MAPS:
                    self.fail(
                        tspan, f"'{target}' is a word of the language and cannot name a local"
                    )
            before = len(scope.forward_refs)
            value = self.expressions.value(stmt.value, scope)
            if isinstance(value, ScalarLike) and not is_state:
                scope.scalar_locals[target] = value  # read in its place (language.md 5.6)
                return None
            form = self.expressions.as_tensor(value, stmt.value, f"the new value of '{target}'")
            self.expressions.spaces.assigned(stmt, target, value, scope)
            for name, span in scope.forward_refs[before:]:
                if not (is_state and name == target):
                    self.fail(
                        span,
                        f"'{name}+' is defined by a later statement, inside the block call of an implicit rule",
                        f"optgen solves a statement for its own next iterate only; move the block call into the statement {name}+ = ...",
                    )
        finally:
            scope.current_target = None
            if is_state:
                scope.assigned.add(target)
                if isinstance(stmt.target, ast.Name):
                    scope.rebound.add(target)
            elif target in RESERVED or target in ELEMENTWISE_MAPS:
                self.poisoned.add(target)
            elif target not in taken and target not in scope.scalar_locals:
                scope.locals_.add(target)
                self.ctx.local_names.add(target)
        return ir.Assign(target, is_state, form, stmt.span, stmt.text)

    def target(self, node, scope: Scope) -> tuple[str, bool, Span]:
        if node.id in self.poisoned and node.id not in scope.states:
            self.report.abandon()  # its declaration failed: that error said it all
        if isinstance(node, ast.NextName):
            if node.id not in scope.states:
                self.fail(
                    node.span,
                    f"'{node.id}+' : '{node.id}' is not a state",
                    _did_you_mean(node.id, scope.states) or "declare it: state " + node.id,
                )
            return node.id, True, node.span
        if isinstance(node, ast.Indexed):
            index = self.scalars.scalar(node.index, {"k": ir.K}, "an index")
            if node.id in scope.states and index == ir.K + 1:
                return node.id, True, node.span
            self.fail(
                node.span,
                f"cannot assign to '{self.text(node)}'",
                f"assign the next iterate: {node.id}+ = ... or {node.id}[k+1] = ...",
            )
        name = node.id
        if name in scope.states:
            return name, True, node.span
        if name in scope.params:
            self.fail(node.span, f"'{name}' is a param; params cannot be assigned in the update")
        if name in scope.blocks:
            self.fail(node.span, f"'{name}' is a block; blocks cannot be assigned in the update")
        return name, False, node.span


def _not_plain(*modes: bool) -> str | None:
    """What makes a network's layers other than plain explicit ones, in words: `modes` are
    (equilibrium, implicit, reversible[, checkpointed])."""
    words = ("an equilibrium", "implicit", "reversible", "checkpointed")
    return next((word for word, on in zip(words, modes) if on), None)


def _state_names(node, states: list[str]) -> set[str]:
    """The states an init reads through sums, products and signs (not inside calls)."""
    found, stack = set(), [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Name) and current.id in states:
            found.add(current.id)
        if isinstance(current, (ast.Binary, ast.Neg)):
            stack.extend(ast.sub_expressions(current))
    return found


def unread_params(decls: dict) -> list[tuple[str, Span, str]]:
    """(name, where, hint) of each param that no statement, init, block argument or other
    param reads (a recursion reading itself does not count): a leftover, or a misspelling
    of the name the rule reads (`bta` beside `beta`)."""
    params = decls.get(ast.ParamDecl, [])
    reads: list[str] = []
    for d in params:
        reads += [n for n in _names(d.value) if n != d.name.id]
    for update in decls.get(ast.UpdateDecl, []):
        reads += [n for st in update.statements for n in _names(st.value)]
    for init in decls.get(ast.InitDecl, []):
        reads += [n for a in init.assigns for n in _names(a.value)]
    for block in decls.get(ast.BlockDecl, []):
        reads += [n for arg in block.args for n in _names(arg.value)]
    found, seen = [], set()
    for d in params:
        name = d.name.id
        if name in reads or name in seen:
            continue
        seen.add(name)
        # Only a close name: any unread param is "like" some short name otherwise.
        close = difflib.get_close_matches(name, sorted(set(reads)), n=1, cutoff=0.75)
        hint = f"did you mean '{close[0]}'? The rule reads it" if close else None
        found.append((name, d.name.span, hint or "read it in the update, or remove it"))
    return found


def _names(node) -> list[str]:
    """The names an expression reads (`beta`, the `tk` of `tk[k+1]`)."""
    if not hasattr(node, "span") or isinstance(node, ast.StringLit):
        return []
    return [n.id for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Indexed))]
