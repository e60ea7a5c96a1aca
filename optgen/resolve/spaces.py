"""Spaces: which vector space each tensor of an update lives in (language.md 4.1.1).

A state declared `y: m` lives in a space of size m; every other tensor lives in `dim`, the
space of the input. Tensors combine only within one space; a block maps its `source_space`
to its `target_space`, and `K^T` of an operator block maps back. The rules here give the
space of each value the expression resolver builds, and fail, located, where a rule mixes
two spaces."""

from __future__ import annotations

import dataclasses
import keyword

from .. import ir, naming
from ..kinds.blocks import BLOCK_KINDS, ELEMENTWISE_MAPS
from ..syntax import ast
from .context import RESERVED, Job, _clip
from .values import Scope, Tensor


def _article(word: str) -> str:
    return "an" if word in ("mlp", "operator") else "a"


def _named(space: str) -> str:
    return "dim (the input's space)" if space == ir.DIM_SPACE else space


class SpaceRules(Job):
    """The space of each tensor value, and the located errors of the rules that mix two."""

    # ------------------------------------------------------------ declarations
    def declared(self, decl: ast.StateDecl, inits: list[ast.InitDecl], claim) -> dict:
        """`state x, y: m`: the size of each state declared in another space than dim
        (`ctx.sizes` the sizes, in order), each size's name checked and claimed once."""
        sizes: dict[str, str] = {}
        for ident, size in zip(decl.names, decl.sizes):
            if size is not None and self.size_name(size, sizes, claim):
                sizes[ident.id] = size.id
        started = {a.target.id for d in inits for a in d.assigns}
        for ident, size in zip(decl.names, decl.sizes):
            if ident.id in sizes and ident.id not in started:
                self.report.error(
                    size.span,
                    f"state '{ident.id}' lives in the space {size.id}, so it cannot start as "
                    "input, which lives in dim",
                    f"give it a start: init {ident.id} = 0",
                )
        self.ctx.sizes = tuple(dict.fromkeys(sizes.values()))
        return sizes

    def size_name(self, ident: ast.Ident, sizes: dict[str, str], claim) -> bool:
        """Whether `m` of `y: m` names a space other than dim. It becomes an argument and
        an attribute of the generated module: one of that module's names is refused."""
        word = ident.id
        if word == ir.DIM_SPACE or word in sizes.values():
            return word != ir.DIM_SPACE
        if word in RESERVED or word in ELEMENTWISE_MAPS:
            return claim(ident, "size")  # which says what the word already is
        taken = (
            naming.reserved(naming.Reserved.CONSTRUCTOR_LOCAL)
            | naming.reserved(naming.Reserved.MODULE_ATTRIBUTE)
            | naming.reserved(naming.Reserved.FILE_BINDING)
        )
        if word.startswith("_") or keyword.iskeyword(word) or word in taken:
            self.report.error(
                ident.span,
                f"size '{word}' would be an argument and an attribute of the generated "
                "module, where that name is taken",
                "pick another name for the size, such as m or n_dual",
            )
            return False
        return claim(ident, "size")

    @staticmethod
    def operators_on_tokens(blocks: dict[str, ir.Block]) -> dict[str, ir.Block]:
        """A matrix operator acts on the last axis: beside token blocks it takes their
        layout, [N, L, dim], as well as the vector one."""
        if {b.layout for b in blocks.values() if b.kind != "operator"} != {"sequence"}:
            return blocks
        return {
            n: dataclasses.replace(b, layout="sequence") if b.kind == "operator" else b
            for n, b in blocks.items()
        }

    def explicit_only(self, decl: ast.StateDecl, network: str, what: str) -> None:
        first = next(size for size in decl.sizes if size is not None)
        self.fail(
            first.span,
            f"states of another space than dim are for explicit layers, and network "
            f"{network} is {what}",
            "the solvers, the reversible backward and checkpoint carry states of dim only",
        )

    def no_output(self, decl: ast.StateDecl, network: str) -> None:
        self.fail(
            decl.span,
            f"every state of network {network} lives in a space of its own, and the module "
            "returns a state of its input's space, dim",
            "declare a state of dim: state x, y: m",
        )

    def output(self, name: ast.Ident, size: str) -> None:
        self.fail(
            name.span,
            f"output '{name.id}' lives in the space {size}, and the module returns a tensor "
            "of its input's space, dim",
            "output a state of dim",
        )

    # ------------------------------------------------------------ expressions

    def block_call(self, node: ast.Call, arg: Tensor, scope: Scope) -> str | None:
        """The space of `B(e)` or `K^T(e)`, `e` checked against the space B takes."""
        block = scope.resolved_blocks.get(node.func)
        if block is None:  # its declaration failed, and said so: its spaces are unknown
            return None
        kind = BLOCK_KINDS[block.kind]
        if node.adjoint and kind.adjoint is None:
            operator = "conv_operator" if block.layout == "image" else "operator"
            to = self.ctx.sizes[0] if self.ctx.sizes else ir.DIM_SPACE
            self.fail(
                node.func_span,
                f"'{node.func}^T': block {node.func} is {_article(block.kind)} {block.kind} "
                "block, and only an operator block has an adjoint",
                f"declare it as one: block {node.func} = {operator}(from=dim, to={to})",
            )
        takes, gives = block.source_space, block.target_space
        if node.adjoint:
            takes, gives = gives, takes
        if arg.space not in (takes, None):
            call = f"{node.func}^T" if node.adjoint else node.func
            self.fail(
                node.args[0].span,
                f"{call} takes tensors of space {takes}, but '{_clip(self.text(node.args[0]))}' "
                f"lives in {arg.space}",
                self._bridge(block, arg.space, takes),
            )
        return gives

    def _bridge(self, block: ir.Block, given: str, takes: str) -> str:
        kind = BLOCK_KINDS[block.kind]
        if kind.adjoint is not None:
            return (
                f"{block.name} maps {block.source_space} to {block.target_space}, and "
                f"{block.name}^T maps {block.target_space} back to {block.source_space}"
            )
        return (
            f"declare the block on that space: {block.kind}(space={given}), or map the "
            f"argument to {takes} with an operator block"
        )

    def combined(self, node: ast.Binary, left: Tensor, right: Tensor) -> str | None:
        """The space of `left + right` or `left - right`: one space for both (None, of
        a block whose declaration failed, agrees with any)."""
        if None in (left.space, right.space) or left.space == right.space:
            return left.space or right.space
        self.fail(
            node.span,
            f"'{_clip(self.text(node))}' adds tensors of two spaces: "
            f"'{_clip(self.text(node.left))}' lives in {_named(left.space)}, "
            f"'{_clip(self.text(node.right))}' in {_named(right.space)}",
            "move a tensor between spaces with an operator block: K(x) and K^T(y) of "
            "block K = operator(from=dim, to=m)",
        )

    def scaled(self, node, tensor: Tensor, coef, scope: Scope) -> None:
        """A per_channel param holds dim values: it scales tensors of dim only."""
        if tensor.space in (ir.DIM_SPACE, None) or not hasattr(coef, "free_symbols"):
            return
        for p in scope.params.values():
            if p.per_channel and p.symbol in coef.free_symbols:
                self.fail(
                    node.span,
                    f"per_channel param {p.name} holds one value per channel of dim, but "
                    f"'{_clip(self.text(node))}' scales a tensor of space {tensor.space}",
                    "use a scalar param for tensors of another space",
                )

    def same_space(self, node, spaces: list[str], what: str) -> None:
        """The tensor arguments of `dot(a, b)` live in one space."""
        if len(set(spaces) - {None}) > 1:
            self.fail(
                node.span,
                f"{what} reads tensors of two spaces: {spaces[0]} and {spaces[1]}",
                "an inner product takes two tensors of one space",
            )

    def assigned(self, stmt: ast.Statement, target: str, value: Tensor, scope: Scope) -> None:
        """A state keeps its space; a local takes the space of its value."""
        if target in scope.states:
            space = scope.space(target)
            if value.space not in (space, None):
                self.fail(
                    stmt.value.span,
                    f"state '{target}' lives in {_named(space)}, but its new value "
                    f"'{_clip(self.text(stmt.value))}' lives in {_named(value.space)}",
                    "move it with an operator block: K(x) maps dim to m, K^T(y) maps m to dim",
                )
        elif value.space is not None:
            scope.local_spaces[target] = value.space

    def history_sum(self, node: ast.HistorySum, body: ir.LinearForm, scope: Scope) -> None:
        """A sum over history adds tensors of dim (the running total starts as the
        input's zeros)."""
        for atom in body.atoms():
            name = getattr(atom, "name", None)
            space = scope.space(name) if atom.is_state else scope.local_spaces.get(name)
            if space not in (None, ir.DIM_SPACE):
                self.fail(
                    node.span,
                    f"a sum over the history of '{name}', which lives in space {space}: "
                    "sums over history add tensors of dim only",
                    "keep a running sum of it as a state of that space instead",
                )

    def init(self, assign: ir.InitAssign, sizes: dict[str, str]) -> bool:
        """An init of a state of space m reads 0 and states of m; of dim, input too."""
        space = sizes.get(assign.state, ir.DIM_SPACE)
        for atom in assign.form.atoms():
            given = (
                sizes.get(atom.name, ir.DIM_SPACE) if isinstance(atom, ir.Initial) else ir.DIM_SPACE
            )
            if given != space:
                what = "input" if isinstance(atom, ir.InputValue) else f"'{atom.name}'"
                self.fail(
                    assign.span,
                    f"state '{assign.state}' lives in {_named(space)}, but its init reads "
                    f"{what}, which lives in {_named(given)}",
                    f"start it at zero: init {assign.state} = 0",
                )
        return True
