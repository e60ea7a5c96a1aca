"""`optgen inspect FILE --summary`: parameters, FLOPs and output shape of every part of a model.

The figures are measured on the generated module itself at the declared input size (one
image, eval mode), with `torch.utils.flop_counter`, so they are the figures users get.
"""

from __future__ import annotations

from .. import ir, present
from ..analysis.model import ModelCertificate
from ..backend.emit import build_model, count_flops
from ..kinds.parts import head_text


def _flops_by_part(model, input_size: tuple[int, ...]) -> dict[str, int]:
    """FLOPs per module path below the model (leaf modules summed up to each prefix)."""
    counter = count_flops(model, input_size)
    counts = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    leaves = [k for k in counts if not any(other.startswith(k + ".") for other in counts)]
    root = type(model).__name__

    def total(prefix: str) -> int:
        path = f"{root}.{prefix}"
        return sum(counts[k] for k in leaves if k == path or k.startswith(path + "."))

    parts = {"stem": total("stem"), "head": total("head")}
    parts.update({f"stages.{i}": total(f"stages.{i}") for i in range(len(model.stages))})
    parts.update(
        {f"transitions.{i}": total(f"transitions.{i}") for i in range(len(model.transitions))}
    )
    parts["total"] = counts.get("Global", 0)
    return parts


def _params(module) -> int | None:
    return None if module is None else sum(p.numel() for p in module.parameters())


def _part(model, attr: str, index: int | None = None):
    """`model.<attr>` (or its entry `index`), None where the model could not be built."""
    if model is None:
        return None
    part = getattr(model, attr)
    return part if index is None else part[index]


def _measured(source: str, model_ir: ir.Model):
    """The model built on the meta device and its FLOPs per part: shapes only, nothing
    allocated (the figures `FLOPS` and `PARAMS` hold); None and {} for what a custom block
    that reads tensor values keeps from running there."""
    try:
        model = build_model(source, model_ir.name, "meta")
    except Exception:  # noqa: BLE001 - a user's block: its figures are unknown
        return None, {}
    try:
        return model, _flops_by_part(model, model_ir.input)
    except Exception:  # noqa: BLE001 - a user's block that reads tensor values
        return model, {}


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def model_summary(model_ir: ir.Model, source: str, cert: ModelCertificate) -> str:
    """The table of one model, from its generated source."""
    model, flops = _measured(source, model_ir)
    solves = any(not stage_cert.explicit for _, stage_cert in cert.stages)
    rows: list[tuple[str, int, int | None, str, str]] = []
    stem = model_ir.stem
    rows.append(
        (
            f"stem {stem.kind}({stem.out})",
            _params(_part(model, "stem")),
            flops.get("stem"),
            _shape(model_ir.shapes[0]),
            "",
        )
    )
    for i, stage in enumerate(model_ir.stages):
        _, stage_cert = cert.stages[i]
        rows.append(
            (
                f"stage {i} {stage.network}(dim={stage.dim}, depth={stage.depth})",
                _params(_part(model, "stages", i)),
                flops.get(f"stages.{i}"),
                _shape(model_ir.shapes[i]),
                present.verdict_word(stage_cert.universal),
            )
        )
        if i < len(model_ir.transitions):
            t = model_ir.transitions[i]
            rows.append(
                (
                    f"{t.kind}({t.out}), carry {t.carry}",
                    _params(_part(model, "transitions", i)),
                    flops.get(f"transitions.{i}"),
                    _shape(model_ir.shapes[i + 1]),
                    "",
                )
            )
    head = model_ir.head
    out = _shape(model_ir.output_shape) if head.classes is None else f"[{head.classes}]"
    rows.append(
        (
            f"head {head_text(head)}",
            _params(_part(model, "head")),
            flops.get("head"),
            out,
            "",
        )
    )
    rows.append(
        ("total", _params(model), flops.get("total"), out, present.verdict_word(cert.universal))
    )

    def count(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    c, h, w = model_ir.input
    header = ("part", "params", "FLOPs", "output", "universal")
    table = [header] + [(name, count(p), count(f), shape, v) for name, p, f, shape, v in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"model {model_ir.name}: input [{c}, {h}, {w}], one image"]
    for row in table:
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    if solves:
        lines.append(
            "  (a solving stage is counted at its whole iteration budget, max_iter: its work"
            " depends on the data)"
        )
    return "\n".join(lines)
