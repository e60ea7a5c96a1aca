"""The layer dataflow graph of a network, as mermaid or graphviz dot text."""

from __future__ import annotations

from .. import ir
from ..analysis.recurrence import user_names
from ..kinds.parts import TRANSITION_KINDS, head_text


def _edges(net: ir.Network) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Nodes (id -> label) and edges (source, target, label) of one layer."""
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []

    def node_of(atom) -> str:
        if isinstance(atom, ir.StateAt):
            key = f"{atom.name}_{'next' if atom.lag == 1 else ('k' if atom.lag == 0 else f'km{-atom.lag}')}"
            nodes.setdefault(key, atom.show() if atom.lag else f"{atom.name}[k]")
            return key
        if isinstance(atom, ir.BlockOut):
            key = f"call_{len(nodes)}"
            nodes[key] = f"{atom.block}{'^T' if atom.adjoint else ''}(.)"
            for inner, coef in atom.arg.terms:
                edges.append((node_of(inner), key, _coef(coef)))
            return key
        if isinstance(atom, ir.DataScaled):
            # A product node: the scaled form, and a node per reduction feeding it.
            key = f"scale_{len(nodes)}"
            nodes[key] = "* per sample"
            for inner, coef in atom.arg.terms:
                edges.append((node_of(inner), key, _coef(coef)))
            for reduction in atom.reductions:
                reduced = f"reduce_{len(nodes)}"
                nodes[reduced] = f"{reduction.kind.value}(.)"
                for form in reduction.args:
                    for inner, coef in form.terms:
                        edges.append((node_of(inner), reduced, _coef(coef)))
                edges.append((reduced, key, ""))
            return key
        if isinstance(atom, ir.Local):
            if atom.lag == 0:
                return f"local_{atom.name}"
            key = f"local_{atom.name}_km{-atom.lag}"  # g- is the local of an earlier layer
            nodes.setdefault(key, atom.show())
            return key
        key = f"atom_{len(nodes)}"
        nodes[key] = atom.show()
        return key

    for st in net.statements:
        target = f"{st.target}_next" if st.is_state else f"local_{st.target}"
        nodes[target] = f"{st.target}+" if st.is_state else st.target
        combo = f"comb_{len(nodes)}"
        nodes[combo] = "+"
        for atom, coef in st.form.terms:
            edges.append((node_of(atom), combo, _coef(coef)))
        edges.append((combo, target, ""))
    return nodes, edges


def _coef(coef) -> str:
    """An edge label: the coefficient in the user's names (`step_size`, not `p_step_size`)."""
    text = str(user_names(coef))
    return "" if text == "1" else text


def _model_edges(model: ir.Model) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Nodes and edges of a model: stem, stages, transitions, head; edges carry the shapes."""

    def shape(dims) -> str:  # 16x32x32: no brackets, which mermaid edge labels cannot hold
        return "x".join(str(d) for d in dims)

    c, h, w = model.input
    nodes = {"image": f"input [{c}, {h}, {w}]", "stem": f"stem {model.stem.kind}({model.stem.out})"}
    edges = [("image", "stem", "")]
    previous = "stem"
    for i, stage in enumerate(model.stages):
        key = f"stage{i}"
        nodes[key] = f"stage {i}: {stage.network} x{stage.depth}"
        edges.append((previous, key, shape(model.shapes[i])))
        previous = key
        if i < len(model.transitions):
            t = model.transitions[i]
            if not TRANSITION_KINDS[t.kind].runs:
                continue
            key = f"transition{i}"
            nodes[key] = f"{t.kind}({t.out})"
            edges.append((previous, key, f"carry {t.carry}"))
            previous = key
    nodes["head"] = f"head {head_text(model.head)}"
    edges.append((previous, "head", shape(model.output_shape)))
    return nodes, edges


def render_graph(net: ir.Network | ir.Model, kind: str) -> str:
    nodes, edges = _model_edges(net) if isinstance(net, ir.Model) else _edges(net)
    if kind == "dot":
        lines = [f"digraph {net.name} {{", "  rankdir=LR;"]
        lines += [f'  {key} [label="{label}"];' for key, label in nodes.items()]
        for a, b, lab in edges:
            attrs = f' [label="{lab}"]' if lab else ""
            lines.append(f"  {a} -> {b}{attrs};")
        return "\n".join(lines + ["}"])
    lines = ["flowchart LR"]
    lines += [f'    {key}["{label}"]' for key, label in nodes.items()]
    lines += [f"    {a} -->{f'|{lab}|' if lab else ''} {b}" for a, b, lab in edges]
    return "\n".join(lines)
