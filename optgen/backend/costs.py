"""FLOPs, MACs and parameters of a generated model, counted on the meta device.

The counter is `torch.utils.flop_counter`: it reads the shapes of each matmul and
convolution, never their values, so a meta-device forward gives the figures of a CPU or
GPU forward without arithmetic and without allocating a tensor. Its convention is a
multiply-add counts 2 FLOPs; every op it counts is a sum of products, so MACs are FLOPs
divided by 2. Elementwise work (activations, norms, softmax, the rule's own combination of
states) is not counted, as in timm's and most papers' figures.

Two choices make the figures independent of the machine and of the model's depth:

- **Attention by its formula.** `scaled_dot_product_attention` is counted through its math
  path (`sdpa_kernel(MATH)`): its two batched matmuls, 4·N·L²·dim FLOPs for N sequences of
  L tokens of width dim whatever the head count. The fused kernels a CPU or GPU picks would
  otherwise be counted or not according to which of them torch's counter has a formula for
  (the CPU one had none: 24 % of a ViT-like model's FLOPs went missing).
- **Layers by extrapolation.** A layer of a stage costs the same at every k once its
  history is full, so a stage deeper than `EXTRAPOLATED_PAST` layers is built with
  `FULL + 2` layers, the model runs with `FULL` of them, and the stage alone runs again
  with `FULL + 1` and `FULL + 2`: the two differences must agree (else the model is
  counted whole), and each further layer costs that difference. Parameters are
  extrapolated the same way. Compiling a model of 4,096 layers a stage costs what one of
  25 does; the generated test counts the whole model at its full depth and must agree.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass

# A stage deeper than EXTRAPOLATED_PAST layers is counted from FULL, FULL + 1 and FULL + 2
# of its layers (past any history a rule reads, up to FULL - 1 layers back); up to that
# depth running every layer costs about as much as the three samples.
FULL = 8
EXTRAPOLATED_PAST = 3 * FULL


@dataclass(frozen=True)
class Costs:
    """A model's figures per part (`stem`, `stages.i`, `transitions.i`, `head`, `total`):
    FLOPs and parameters, None where they could not be measured, and why (`failure`)."""

    flops: dict[str, int] | None
    params: dict[str, int] | None
    failure: str | None = None

    @property
    def total_flops(self) -> int | None:
        return None if self.flops is None else self.flops["total"]

    @property
    def total_macs(self) -> int | None:
        return None if self.flops is None else macs(self.flops["total"])

    @property
    def total_params(self) -> int | None:
        return None if self.params is None else self.params["total"]


def build_model(source: str, class_name: str, device: str = "cpu", capped: bool = False):
    """The model class defined by a generated `source`, built at seed 0, in eval mode, on
    `device` (`"meta"`: shapes only, no storage and no arithmetic).

    `capped`: every stage deeper than EXTRAPOLATED_PAST layers is built with FULL + 2 and
    runs FULL of them (its declared depth kept as `declared_depth`, how to build it again
    as `rebuild`)."""
    import torch

    # A name no module holds: the file's timm registration is for imported modules only.
    namespace: dict = {"__name__": f"<optgen model {class_name}>"}
    exec(compile(source, f"<optgen model {class_name}>", "exec"), namespace)
    if capped:
        for name, value in list(namespace.items()):
            if _is_stage_class(value, namespace[class_name]):
                namespace[name] = _capped(value)
    torch.manual_seed(0)
    with torch.device(device):
        return namespace[class_name]().eval()


def _is_stage_class(value, model_class) -> bool:
    """A generated network class: a module class taking `depth` (the model's stages)."""
    import torch

    return (
        isinstance(value, type)
        and issubclass(value, torch.nn.Module)
        and value is not model_class
        and "depth" in inspect.signature(value).parameters
    )


def _capped(cls):
    """`cls`, built with FULL + 2 layers where more were asked for."""

    class Capped(cls):
        def __init__(self, *args, **kwargs) -> None:
            bound = inspect.signature(cls).bind(*args, **kwargs)
            bound.apply_defaults()
            declared = bound.arguments["depth"]
            deep = declared > EXTRAPOLATED_PAST
            if deep:
                bound.arguments["depth"] = FULL + 2
            super().__init__(*bound.args, **bound.kwargs)
            if deep:
                self.declared_depth, self.rebuild, self.depth = declared, (cls, bound), FULL

    Capped.__name__, Capped.__qualname__ = cls.__name__, cls.__qualname__
    return Capped


def _parts(model) -> list[str]:
    return (
        ["stem"]
        + [f"stages.{i}" for i in range(len(model.stages))]
        + [f"transitions.{i}" for i in range(len(model.transitions))]
        + ["head"]
    )


@contextlib.contextmanager
def _at_budget(model):
    """Every solving stage at its whole iteration budget: `max_iter` evaluations of its
    layer map (the fixed-iteration path), as the generated test counts it; the iterations
    of a solve depend on the data."""
    saved = {}
    for i, stage in enumerate(model.stages):
        if hasattr(stage, "solver"):
            saved[i] = stage.solver
            stage.fixed_iterations(stage.solver["max_iter"])
    try:
        yield
    finally:
        for i, solver in saved.items():
            model.stages[i].solver = solver


def macs(flops: int) -> int:
    """Multiply-adds of a FLOP count: every op counted is a sum of products, 2 FLOPs each."""
    return flops // 2


def _counted(run) -> dict[str, int]:
    """FLOPs of `run()` per module path (and "Global"), attention by its formula.

    The counter adds each op to every module on the stack when it runs, so a module's own
    entry holds everything below it (its children's and its own: attention's matmuls in a
    block included)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as counter:
            run()
    return {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}


def count_flops(model, input_size: tuple[int, ...]) -> dict[str, int]:
    """FLOPs per part after one forward of one zero image through `model` (each solve at
    its whole iteration budget)."""
    import torch

    device = next(model.parameters()).device
    with _at_budget(model):
        counts = _counted(lambda: model(torch.zeros(1, *input_size, device=device)))
    root = type(model).__name__
    figures = {part: counts.get(f"{root}.{part}", 0) for part in _parts(model)}
    figures["total"] = counts.get("Global", 0)
    return figures


def count_params(model) -> dict[str, int]:
    figures = {part: _numel(model.get_submodule(part)) for part in _parts(model)}
    figures["total"] = _numel(model)
    return figures


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


class NotLinear(Exception):
    """A stage whose layers do not all cost the same: it must be counted whole."""


def _added(figures: dict[str, int], part: str, amount: int) -> dict[str, int]:
    out = dict(figures)
    out[part] += amount
    out["total"] += amount
    return out


def _per_layer(values: list[int], what: str) -> int:
    """The common difference of three figures at consecutive depths."""
    first, second = values[1] - values[0], values[2] - values[1]
    if first != second:
        raise NotLinear(f"{what}: {values} at consecutive depths")
    return first


def _deep_stages(model):
    """(index, stage) of each stage built capped."""
    for i, stage in enumerate(model.stages):
        if hasattr(stage, "declared_depth"):
            yield i, stage


def extrapolated_flops(model, input_size: tuple[int, ...]) -> dict[str, int]:
    """FLOPs per part of a model built with `build_model(capped=True)`, at the stages'
    declared depths: the model once, then each deep stage alone on the input it got."""
    inputs: dict[int, tuple] = {}

    def keep(index, stage, args, kwargs):
        inputs[index] = (args, kwargs)

    hooks = [
        stage.register_forward_pre_hook(functools.partial(keep, i), with_kwargs=True)
        for i, stage in _deep_stages(model)
    ]
    try:
        flops = count_flops(model, input_size)
    finally:
        for hook in hooks:
            hook.remove()
    for i, stage in _deep_stages(model):
        part, (args, kwargs) = f"stages.{i}", inputs[i]
        samples = [flops[part]]
        with _at_budget(model):
            for depth in (FULL + 1, FULL + 2):
                stage.depth = depth
                samples.append(_counted(lambda: stage(*args, **kwargs)).get("Global", 0))
        stage.depth = FULL
        per_layer = _per_layer(samples, f"FLOPs of {part}")
        flops = _added(flops, part, (stage.declared_depth - FULL) * per_layer)
    return flops


def extrapolated_params(model) -> dict[str, int]:
    """Parameters per part of a model built with `build_model(capped=True)`, at the
    stages' declared depths: each capped stage holds FULL + 2 layers' parameters."""
    import torch

    params = count_params(model)
    for i, stage in _deep_stages(model):
        cls, bound = stage.rebuild
        sizes = []
        for depth in (FULL, FULL + 1, FULL + 2):
            bound.arguments["depth"] = depth
            with torch.device("meta"):
                sizes.append(_numel(cls(*bound.args, **bound.kwargs)))
        per_layer = _per_layer(sizes, f"parameters of stages.{i}")
        params = _added(params, f"stages.{i}", (stage.declared_depth - FULL - 2) * per_layer)
    return params


def measure(source: str, class_name: str, input_size: tuple[int, ...]) -> Costs:
    """FLOPs and parameters per part of the model in `source`, at one image.

    Measured on the meta device only, so that a model asking for terabytes costs nothing. A
    custom block that reads values cannot run there: its figures are left unknown rather
    than measured on a real allocation."""
    try:
        model = build_model(source, class_name, "meta", capped=True)
    except Exception as err:  # noqa: BLE001 - a user's block: reported, not raised
        return Costs(None, None, f"building it on the meta device failed ({_short(err)})")
    try:
        params = extrapolated_params(model)
    except NotLinear:
        model = build_model(source, class_name, "meta")
        params = count_params(model)
    try:
        try:
            flops = extrapolated_flops(model, input_size)
        except NotLinear:
            # Layers that do not cost alike (no rule of the language so far): every layer
            # built and run.
            flops = count_flops(build_model(source, class_name, "meta"), input_size)
    except Exception as err:  # noqa: BLE001 - a user's block that reads tensor values
        failure = f"its forward pass failed on the meta device ({_short(err)})"
        return Costs(None, params, failure)
    return Costs(flops, params)


def _short(err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."
