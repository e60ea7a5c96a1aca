"""Plan ops to Python source: the one writer of generated statements.

After jinja2's `CodeGenerator` and torch.fx's `python_code`: one object owns the
indentation (`indent`, `outdent`, `writeline`), and each op kind has one `visit_<Op>`
method that writes it. Nothing downstream edits the text.
"""

from __future__ import annotations

import re
import unicodedata

from ..kinds.calls import Call, Code, Value
from ..present import count
from . import plan


def value_source(value: Value) -> str:
    """One argument of a constructor call: source in the constructor's names, or repr."""
    if isinstance(value, Code):
        return value.text
    if isinstance(value, Call):
        return call_source(value)
    return repr(value)


def call_source(call: Call) -> str:
    """`MLP(dim, hidden=2 * dim, act='relu')`: how the generated file builds a module."""
    callee = call.callee if isinstance(call.callee, str) else call_source(call.callee)
    args = [value_source(a) for a in call.args]
    args += [f"{key}={value_source(value)}" for key, value in call.kwargs]
    return f"{callee}({', '.join(args)})"


def visible_text(text: str, keep: str = "\t") -> str:
    """Control and format characters (bidi overrides, zero-width marks, line and
    paragraph separators) as `\\uXXXX`: what the file says is what an editor shows."""
    return "".join(
        (
            f"\\u{ord(c):04x}"
            if c not in keep and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
            else c
        )
        for c in text
    )


def comment_text(text: str) -> str:
    """User text made safe for a one-line comment (newlines and continuations folded)."""
    return visible_text(re.sub(r"\s+", " ", str(text).replace("\\\n", " ")).strip())


def docstring_text(text: str) -> str:
    """User text made safe inside a triple-quoted docstring."""
    text = visible_text(text.replace("\\", "\\\\"), keep="\t\n")
    text = text.replace('"""', '\\"\\"\\"')
    return text.rstrip('"') if text.endswith('"') else text


class CodeWriter:
    """Lines of Python at a current indentation level."""

    def __init__(self, unit: str = "    ") -> None:
        self._lines: list[str] = []
        self._level = 0
        self._unit = unit

    def indent(self) -> None:
        self._level += 1

    def outdent(self) -> None:
        self._level -= 1

    def writeline(self, text: str = "") -> None:
        self._lines.append(self._unit * self._level + text if text else "")

    def getvalue(self) -> str:
        return "\n".join(self._lines) + "\n"


def _scalar(s: plan.Scalar | None) -> str:
    return s.text if s is not None else "1.0"


class ForwardWriter(CodeWriter):
    """Writes plan ops as the statements of a `forward` body."""

    def __init__(self, unit: str = "    ") -> None:
        super().__init__(unit)
        self._loop_names: list[set[str]] = []  # what each enclosing layer loop assigns

    def write(self, ops) -> None:
        for op in ops:
            getattr(self, f"visit_{type(op).__name__}")(op)

    def write_block(self, ops) -> None:
        """An indented body: `pass` when it holds no statement."""
        self.indent()
        if all(isinstance(op, plan.Comment) for op in ops):
            self.write(ops)
            self.writeline("pass")
        else:
            self.write(ops)
        self.outdent()

    # ------------------------------------------------------------ straight-line ops
    def visit_Comment(self, op: plan.Comment) -> None:
        line = f"# {comment_text(op.text)}"
        # What a fused statement computes can read exactly as the rule's line above it.
        if not self._lines or self._lines[-1] != self._unit * self._level + line:
            self.writeline(line)

    def visit_Const(self, op: plan.Const) -> None:
        self.writeline(f"{op.target} = {float(op.value)!r}")

    def visit_ParamValue(self, op: plan.ParamValue) -> None:
        # A learnable scalar has shape [1] (FSDP2's fully_shard refuses 0-dim parameters):
        # it broadcasts like a 0-dim one, and indexing it would cost an op per call.
        raw = f"self.{op.attr}"
        if op.spatial_axes:
            # One value per channel, viewed as [dim, 1, 1] (the map is elementwise).
            raw += "[..., " + ", ".join(["None"] * op.spatial_axes) + "]"
        how = plan.Reparametrization
        value = {
            how.IDENTITY: raw,
            how.SOFTPLUS: f"F.softplus({raw})",
            how.SIGMOID: f"torch.sigmoid({raw})",
            how.SCALED_SIGMOID: f"(torch.sigmoid({raw}) * {op.hi - op.lo!r} + {op.lo!r})",
        }[op.how]
        self.writeline(f"{op.target} = {value}.to({op.like}.dtype)")

    def visit_ScalarDef(self, op: plan.ScalarDef) -> None:
        self.writeline(f"{op.target} = {op.value.text}")

    def visit_FetchBlock(self, op: plan.FetchBlock) -> None:
        index = "0" if op.shared else "k"
        self.writeline(f"{op.target} = self.blocks[{op.block!r}][{index}]")

    def visit_Alias(self, op: plan.Alias) -> None:
        self.writeline(f"{op.target} = {op.source}")

    def visit_Zeros(self, op: plan.Zeros) -> None:
        if op.size is None:
            self.writeline(f"{op.target} = torch.zeros_like({op.like})")
        elif op.axis == -1:
            shape = f"*{op.like}.shape[:-1], self.{op.size}"
            self.writeline(f"{op.target} = {op.like}.new_zeros({shape})")
        else:  # the channels of an image, [N, m, H, W]
            shape = f"{op.like}.shape[0], self.{op.size}, *{op.like}.shape[2:]"
            self.writeline(f"{op.target} = {op.like}.new_zeros({shape})")

    def visit_Lerp(self, op: plan.Lerp) -> None:
        start, end = op.start, op.end
        if op.cast == "start":
            start = f"{op.start}.to({op.end}.dtype)"
        elif op.cast == "end":
            end = f"{op.end}.to({op.start}.dtype)"
        self.writeline(f"{op.target} = torch.lerp({start}, {end}, {op.weight.text})")

    def visit_AddAlpha(self, op: plan.AddAlpha) -> None:
        name = "sub" if op.subtract else "add"
        args = op.b if op.alpha is None else f"{op.b}, alpha={op.alpha.text}"
        if op.scale_first and op.alpha is not None:
            # Inductor (torch 2.13) folds add(a, mm, alpha=c) into an addmm that drops c.
            args = f"torch.mul({op.b}, {op.alpha.text})"
        if op.inplace:
            self.writeline(f"{op.target}.{name}_({args})")
        else:
            self.writeline(f"{op.target} = torch.{name}({op.a}, {args})")

    def visit_AddCMul(self, op: plan.AddCMul) -> None:
        value = "" if op.value is None else f", value={op.value.text}"
        if op.inplace:
            self.writeline(f"{op.target}.addcmul_({op.tensor}, {op.b}{value})")
        else:
            self.writeline(f"{op.target} = torch.addcmul({op.a}, {op.tensor}, {op.b}{value})")

    def visit_Scale(self, op: plan.Scale) -> None:
        self.writeline(f"{op.target} = torch.mul({op.source}, {op.factor.text})")

    def visit_BlockCall(self, op: plan.BlockCall) -> None:
        if op.adjoint is not None:
            self.writeline(f"{op.target} = {op.adjoint.format(block=op.block, x=op.arg)}")
        elif op.reuse is plan.BlockReuse.NONE:
            self.writeline(f"{op.target} = {op.block}({op.arg})")
        else:
            self.writeline(f"{op.target} = {op.reuse.value}(self, {op.block}, {op.arg})")

    def visit_MapCall(self, op: plan.MapCall) -> None:
        scalars = {name: s.text for name, s in op.scalars}
        self.writeline(f"{op.target} = {op.template.format(x=op.arg, **scalars)}")

    def visit_Reduce(self, op: plan.Reduce) -> None:
        self.writeline(f"{op.target} = _per_sample_{op.kind}({', '.join(op.args)})")

    def visit_Rotate(self, op: plan.Rotate) -> None:
        self.writeline(f"{', '.join(op.targets)} = {', '.join(op.sources)}")

    def visit_Stack(self, op: plan.Stack) -> None:
        self.writeline(f"{op.target} = torch.stack([{', '.join(op.sources)}], dim=1)")

    def visit_Unpack(self, op: plan.Unpack) -> None:
        targets = ", ".join(op.targets) + ("," if len(op.targets) == 1 else "")
        self.writeline(f"{targets} = {op.source}")

    def visit_Unstack(self, op: plan.Unstack) -> None:
        self.writeline(f"{', '.join(op.targets)} = {op.source}.unbind(1)")

    def visit_EmptyWindow(self, op: plan.EmptyWindow) -> None:
        self.writeline(f"{op.target}: list[Tensor] = []")

    def visit_SlideWindow(self, op: plan.SlideWindow) -> None:
        self.writeline(f"{op.window}.append({op.term})")
        self.writeline(f"if len({op.window}) > {op.size}:")
        self.indent()
        self.writeline(f"{op.total} = {op.total} - {op.window}.pop(0)")
        self.outdent()

    def visit_Del(self, op: plan.Del) -> None:
        self.writeline(f"del {', '.join(op.names)}")

    def visit_RunLayers(self, op: plan.RunLayers) -> None:
        one = "," if len(op.targets) == 1 else ""
        targets, sources = ", ".join(op.targets) + one, ", ".join(op.sources) + one
        self.writeline(f"{targets} = {op.runtime.value}(self, ({sources}))")

    # ------------------------------------------------------------ ops with a body
    def visit_FirstLayer(self, op: plan.FirstLayer) -> None:
        self.writeline("if k == 0:")
        self.write_block(op.body)

    def visit_FromLayer(self, op: plan.FromLayer) -> None:
        # k counts the layers of this module from `start` (a stage continuing a recurrence).
        self.writeline(f"if self.start + k >= {op.start}:")
        self.write_block(op.body)

    def _bound_loop_names(self, body, params) -> str:
        """`, T=T, x=x`: the names a local map reads that the enclosing layer loop assigns,
        bound as the map's defaults, so that the map holds this layer's values however
        late it is called (what ruff's B023 asks of a function defined in a loop)."""
        assigned = self._loop_names[-1] if self._loop_names else set()
        defined = {name for inner in plan.walk(body) for name in inner.defines} | set(params)
        read = [name for inner in plan.walk(body) for name in inner.uses]
        bound = [n for n in dict.fromkeys(read) if n in assigned and n not in defined]
        return "".join(f", {name}={name}" for name in bound)

    def visit_Solve(self, op: plan.Solve) -> None:
        bound = self._bound_loop_names(op.body, (op.param,))
        self.writeline("")
        self.writeline(f"def {op.fn}({op.param}: Tensor{bound}) -> Tensor:")
        self.indent()
        self.write(op.body)
        self.writeline(f"return {op.result}")
        self.outdent()
        self.writeline("")
        self.writeline(f"{op.target} = _solve(self, {op.fn}, {op.guess}, {op.layer.text})")

    def visit_SolveInverse(self, op: plan.SolveInverse) -> None:
        single = len(op.params) == 1
        returns = "Tensor" if single else f"tuple[{', '.join(['Tensor'] * len(op.params))}]"
        params = ", ".join(f"{p}: Tensor" for p in op.params)
        params += self._bound_loop_names(op.body, op.params)
        self.writeline("")
        self.writeline(f"def {op.fn}({params}) -> {returns}:")
        self.indent()
        self.write(op.body)
        self.writeline(f"return {', '.join(op.results)}")
        self.outdent()
        self.writeline("")
        targets = ", ".join(op.targets)
        starts = op.starts[0] if single else f"({', '.join(op.starts)})"
        self.writeline(f"{targets} = _solve_inverse(self, {op.fn}, {starts})")

    def visit_Loop(self, op: plan.Loop) -> None:
        self.writeline("for k in range(self.depth):")
        self._loop_names.append({name for inner in plan.walk(op.body) for name in inner.defines})
        self.write_block(op.body)
        self._loop_names.pop()


def runtime_calls(ops) -> set[str]:
    """The runtime functions the statements of `ops` call, as `ForwardWriter` writes them
    (`_solve`, `_solve_inverse`, a layer runtime, a kept or reused block call, a
    per-sample reduction)."""
    found: set[str] = set()
    for op in plan.walk(ops):
        if isinstance(op, plan.Solve):
            found.add("_solve")
        elif isinstance(op, plan.SolveInverse):
            found.add("_solve_inverse")
        elif isinstance(op, plan.RunLayers):
            found.add(op.runtime.value)
        elif isinstance(op, plan.BlockCall) and op.reuse is not plan.BlockReuse.NONE:
            found.add(op.reuse.value)
        elif isinstance(op, plan.Reduce):
            found.add(f"_per_sample_{op.kind}")
    return found


def forward_source(ops, output: str) -> str:
    """The statements of `forward` (at indentation 0), ending with the return."""
    writer = ForwardWriter()
    writer.write(ops)
    writer.writeline(f"return {output}")
    return writer.getvalue()


class FeaturesWriter(CodeWriter):
    """Writes the steps of a model's `forward_features` (plan.StemCall, StageCall,
    TransitionCall)."""

    def write(self, ops) -> None:
        for op in ops:
            getattr(self, f"visit_{type(op).__name__}")(op)

    def visit_StemCall(self, op: plan.StemCall) -> None:
        self.writeline("x = self.stem(x)")

    def visit_StageCall(self, op: plan.StageCall) -> None:
        self.writeline(f"# stage {op.index}: {op.network}, {count(op.depth, 'layer')}")
        # Through the module's __call__ (`_stage`): its hooks fire, FSDP2 can wrap each
        # stage, and set_grad_checkpointing() can checkpoint it.
        given = "slots" if op.from_slots else "x"
        if op.to_slots:
            self.writeline(f"slots = self._stage({op.index}, {given}, carry=True)")
            if given == "x":
                # The slots carry on: x would hold the stage's input through the later stages.
                self.writeline("del x  # the stage's input; the slots carry on")
        else:
            self.writeline(f"x = self._stage({op.index}, {given})")

    def visit_TransitionCall(self, op: plan.TransitionCall) -> None:
        module = f"self.transitions[{op.index}]"
        if op.slots is plan.SlotMap.BATCHED:
            # One batch of every slot: its BatchNorm takes one statistic and applies one
            # affine map to all of them, in training and eval alike, so that x - x-
            # keeps its meaning; slot by slot, each call normalized on its own.
            # Split by the slots' own batch (unflatten, not chunk): export keeps the batch
            # dimension dynamic. A single slot needs no batch of its own.
            if op.count == 1:
                self.writeline(f"# {op.kind}, carry states: the one slot")
                self.writeline(f"slots = ({module}(slots[0]),)")
            else:
                self.writeline(f"# {op.kind}, carry states: every slot in one batch")
                self.writeline(f"batched = {module}(torch.cat(slots))")
                self.writeline("slots = batched.unflatten(0, (len(slots), -1)).unbind()")
        elif op.slots is plan.SlotMap.EACH:
            self.writeline(f"# {op.kind}, carry states: each slot on its own")
            self.writeline(f"slots = tuple({module}(slot) for slot in slots)")
        else:
            self.writeline(f"# {op.kind}, carry output")
            self.writeline(f"x = {module}(x)")


def model_features_source(model_plan) -> str:
    """The statements of a model's `forward_features`: stem, stages and transitions."""
    writer = FeaturesWriter()
    writer.write(model_plan.steps)
    writer.writeline("return x")
    return writer.getvalue()
