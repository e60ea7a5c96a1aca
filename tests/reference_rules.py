"""Rules for the differential tests of tests/test_reference.py: a generator of random valid
rules that reach further than tests/fuzzing.py (sums and sliding windows over states and
locals, local history, maps around and inside statements, learnable per-layer and
per-channel params, recursive schedules read at k + 1 and 0, `x = ...` targets, inits
with params, `checkpoint`), and the minimal reproducers of the compiler bugs the
reference found (all fixed: tests/test_known_bugs.py keeps each as a differential test).
"""

from __future__ import annotations

import random


def rich_program(rng: random.Random, index: int) -> str:
    states = rng.sample(["x", "y", "z", "v"], rng.randint(1, 3))
    lines = [f"network Rich{index} {{", f"    state {', '.join(states)}"]
    fixed, learnable, schedules, per_layer = _params(rng, lines)
    blocks = ["T", "G"][: rng.randint(1, 2)]
    for block in blocks:
        kind = rng.choice(["mlp()", "mlp(act=tanh)", "linear()"])
        lines.append(f"    block {block} = {kind}{rng.choice(['', ' shared'])}")
    lines.append(f"    layers {rng.randint(1, 5)}")
    if len(states) > 1 and rng.random() < 0.6:
        start = [p for p in fixed + learnable if p not in per_layer + schedules]
        coef = rng.choice(["0.5", "1", *start])
        lines.append(f"    init {states[1]} = {coef}*{states[0]} + 0.5*input")
    update = _update(rng, states, blocks, fixed + learnable, schedules)
    if rng.random() < 0.25:
        lines.append(f"    checkpoint {rng.randint(1, 3)}")
    return "\n".join([*lines, "    update {", *update, "    }", "}"]) + "\n"


def data_program(rng: random.Random, index: int) -> str:
    """A random rule whose coefficients read per-sample reductions (language.md 5.6):
    dot and norm of states, locals, block outputs and differences, inside max, min, sign,
    sqrt and abs, beside fixed, learnable and per-layer params."""
    text = rich_program(rng, index).replace(f"network Rich{index} ", f"network Data{index} ")
    lines = text.splitlines()
    states = lines[1].split("state ")[1].split(", ")
    out = []
    for line in lines:
        if line.startswith("        ") and " = " in line and rng.random() < 0.8:
            target, body = line.split(" = ", 1)
            factor = _data_scalar(rng, states)
            term = rng.choice([*states, f"({states[0]} - {states[0]}-)"])
            line = f"{target} = {body} {rng.choice(['+', '-'])} {factor}*{term}"
        out.append(line)
    return "\n".join(out) + "\n"


def _data_scalar(rng, states) -> str:
    a, b = rng.choice(states), rng.choice(states)
    diff = f"{a} - {a}-"
    return rng.choice(
        [
            f"dot({a}, {b})/max(dot({b}, {b}), 0.5)/4",
            f"0.1*norm({diff})",
            f"(1 - sign(dot({a}, {diff})))/4",
            f"min(norm({a}), 1)/5",
            f"0.2*sqrt(dot({a}, {a}) + 1)/(1 + norm({b}))",
            f"abs(dot({a}, {b}))/(10 + dot({a}, {a}) + dot({b}, {b}))",
            f"0.1*exp(-norm({a}))",
        ]
    )


def _params(rng, lines):
    fixed, learnable, schedules, per_layer = [], [], [], []
    kinds = ["schedule", "positive", "per_layer", "per_channel", "recursive", "constant"]
    for i in range(rng.randint(1, 4)):
        name, kind = f"p{i}", rng.choice(kinds)
        if kind == "schedule":
            lines.append(f"    param {name} = k/(k+{rng.randint(1, 4)})")
            fixed.append(name)
            schedules.append(name)
        elif kind == "recursive":
            lines.append(f"    param {name}[0] = 1")
            lines.append(f"    param {name}[k+1] = {name}/2 + 1/(k+2)")
            fixed.append(name)
            schedules.append(name)
        elif kind == "constant":
            lines.append(f"    param {name} = {rng.choice(['0.5', '0.25', '0.1', '0.9'])}")
            fixed.append(name)
        else:
            option = {
                "positive": "0.5 learnable positive",
                "per_layer": "0.4 learnable in (0, 1) per_layer",
                "per_channel": "0.3 learnable positive per_channel",
            }[kind]
            lines.append(f"    param {name} = {option}")
            learnable.append(name)
            if kind == "per_layer":
                per_layer.append(name)
    return fixed, learnable, schedules, per_layer


def _update(rng, states, blocks, params, schedules) -> list[str]:
    lines: list[str] = []
    assigned: list[str] = []
    locals_: list[str] = []
    for s in states:
        if rng.random() < 0.5:
            local = f"g{len(locals_)}"
            argument = rng.choice([*states, f"{s} - {rng.choice(states)}-"])
            lines.append(f"        {local} = {rng.choice(blocks)}({argument})")
            locals_.append(local)
        wrap = rng.random()
        terms = [s]
        for _ in range(rng.randint(1, 4)):
            atom = rng.choice(_atoms(rng, s, states, blocks, assigned, locals_))
            sign = rng.choice(["+", "-"])
            terms.append(f"{sign} {_coef(rng, params, schedules)}*{atom}")
        body = " ".join(terms)
        if wrap < 0.15:
            body = f"softshrink({body}, {rng.choice(['0.1', *(p + '*0.1' for p in params)])})"
        elif wrap < 0.25:
            body = f"clamp({body}, -1, 1.5)"
        target = f"{s}+" if rng.random() < 0.6 else s
        lines.append(f"        {target} = {body}")
        assigned.append(s)
    return lines


def _atoms(rng, s, states, blocks, assigned, locals_) -> list[str]:
    atoms = [
        f"{rng.choice(blocks)}({rng.choice(states)})",
        f"({s} - {s}-)",
        f"{rng.choice(states)}[k-2]",
        f"{rng.choice(states)}[0]",
        "input",
        f"relu({s} - {rng.choice(states)}[0])",
        f"tanh({rng.choice(states)})",
    ]
    # A sum over a state already assigned in this update (SumBug, fixed) included.
    atoms += [
        f"sum(i = 0..k, {rng.choice(states)}[i])",
        f"sum(i = 1..k, (i+1)*{rng.choice(states)}[i])",
        f"sum(i = k-1..k, {rng.choice(states)}[i])",
    ]
    atoms += [f"({t}+ - {s})" for t in assigned]
    for g in locals_:
        atoms += [g, f"{g}-", f"{g}[k-2]", f"sum(i = 0..k, {g}[i])", f"sum(i = k-2..k, {g}[i])"]
    return atoms


def _coef(rng, params, schedules) -> str:
    options = ["0.5", "0.25", "0.1"]
    if params:
        p = rng.choice(params)
        options += [p, f"{p}*0.5", f"(1 - {p})"]
    if schedules:
        p = rng.choice(schedules)
        options += [f"{p}[0]", f"{p}[k+1]"]
    return rng.choice(options)


# ---------------------------------------------------------------------- bugs it found
# Minimal reproducers of what the reference found besides SumBug, each with what the
# compiled module (or the compiler) did before its fix; tests/test_known_bugs.py compiles
# each and compares it, and variations of it, with the reference.
FOUND_BUGS = {
    # IndexError in the constructor: the table of tk values was sized from the reads of
    # tk in the statements' own coefficients, not in a map's argument or scalars (nor a
    # block's argument), so tk[k+1] inside relu was one value past its end.
    "schedule_ahead_in_a_map": """
network AheadInMap {
    state x
    param tk[0] = 1
    param tk[k+1] = tk/2 + 1
    block T = mlp()
    layers 2
    update { x+ = relu(x - tk[k+1]*T(x)) }
}
""",
    # NameError in forward: a coefficient holding a learnable param and a recursive
    # schedule was computed in forward from `tk`, which only __init__ defines.
    "learnable_times_recursive_schedule": """
network LearnableTimesRecursive {
    state x
    param tk[0] = 1
    param tk[k+1] = tk/2 + 1
    param s = 0.5 learnable positive
    block T = mlp()
    layers 2
    update { x+ = x - T(x) + (s - tk)*x }
}
""",
    # NameError in forward: with `checkpoint` a layer runs as `_layer(k, slots)`, and the
    # list of a sliding window's terms was not among the slots it takes.
    "checkpoint_with_a_window": """
network CheckpointWindow {
    state x
    block T = mlp()
    layers 2
    checkpoint 2
    update {
        g = T(x)
        x+ = x - 0.5*sum(i = k-1..k, g[i])
    }
}
""",
    # UnboundLocalError in forward: likewise, a local's history `g_prev`.
    "checkpoint_with_local_history": """
network CheckpointLocalLag {
    state x
    block T = mlp()
    layers 2
    checkpoint 2
    update {
        g = T(x)
        x+ = x - 0.5*g-
    }
}
""",
}

# The analysis (optgen.check_source, and so compile) raised a TypeError out of sympy
# ("cannot determine truth value of Relational"): the characteristic polynomial of a matrix
# with a Piecewise entry (the term a sum from layer 1 gains there).
ANALYSIS_CRASH = """
network AnalysisCrash {
    state y, z, x
    param p0 = k/(k+2)
    param p1 = 0.25
    block T = mlp(act=tanh) shared
    update {
        y+ = y + 0.1*sum(i = 1..k, (i+1)*y[i]) - 0.5*(y - y-)
        z = z + p0*(z - z-)
        g0 = T(x - y-)
        x = x - p1*0.5*sum(i = k-1..k, x[i]) - p1*g0-
    }
}
"""
FOUND_BUGS["analysis_crash"] = ANALYSIS_CRASH
