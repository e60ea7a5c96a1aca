"""`optgen inspect FILE --summary`: parameters, FLOPs and output shape of every part of a model.

The figures are measured on the generated module itself at the declared input size (one
image, eval mode), with `torch.utils.flop_counter`, so they are the figures users get.
"""

from __future__ import annotations

from .. import ir, present
from ..analysis.model import ModelCertificate
from ..backend import costs
from ..backend.costs import Costs
from ..kinds.parts import head_text


def _measured(source: str, model_ir: ir.Model) -> Costs:
    """FLOPs and parameters per part, measured on the meta device: shapes only, nothing
    allocated (the figures `FLOPS` and `PARAMS` hold); unknown (None) for what a custom
    block that reads tensor values keeps from running there."""
    return costs.measure(source, model_ir.name, model_ir.input)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def model_summary(model_ir: ir.Model, source: str, cert: ModelCertificate) -> str:
    """The table of one model, from its generated source."""
    measured = _measured(source, model_ir)
    flops, params = measured.flops or {}, measured.params or {}
    solves = any(not stage_cert.explicit for _, stage_cert in cert.stages)
    rows: list[tuple[str, int, int | None, str, str]] = []
    stem = model_ir.stem
    rows.append(
        (
            f"stem {stem.kind}({stem.out})",
            params.get("stem"),
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
                params.get(f"stages.{i}"),
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
                    params.get(f"transitions.{i}"),
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
            params.get("head"),
            flops.get("head"),
            out,
            "",
        )
    )
    rows.append(
        (
            "total",
            params.get("total"),
            flops.get("total"),
            out,
            present.verdict_word(cert.universal),
        )
    )

    def count(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    def macs(value: int | None) -> str:
        return count(None if value is None else costs.macs(value))

    c, h, w = model_ir.input
    header = ("part", "params", "FLOPs", "MACs", "output", "universal")
    table = [header] + [
        (name, count(p), count(f), macs(f), shape, v) for name, p, f, shape, v in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"model {model_ir.name}: input [{c}, {h}, {w}], one image"]
    for row in table:
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].rjust(widths[3]),
            row[4].ljust(widths[4]),
            row[5],
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    lines.append(
        "  (a multiply-add counts 2 FLOPs and 1 MAC; attention counts its two matmuls,"
        " 4*L*L*dim; elementwise work is not counted)"
    )
    if solves:
        lines.append(
            "  (a solving stage is counted at its whole iteration budget, max_iter: its work"
            " depends on the data)"
        )
    return "\n".join(lines)
