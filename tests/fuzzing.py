"""Random .opt programs (valid by construction) and mutations of the catalog, for fuzzing.

`generate_program(rng)` draws from a `random.Random`; the tests drive it with hypothesis
(`st.randoms()`), `bench/fuzz.py` with a seeded Random for long campaigns.
"""

from __future__ import annotations

import ast
import random
import sys
import types
import warnings
from pathlib import Path

import black

import optgen

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STATE_NAMES = ["x", "y", "z", "lam", "v", "lambda", "self", "torch", "sum", "nn", "F", "w1"]
ALLOWED_IMPORTS = {"torch", "math", "importlib", "warnings", "os", "pytest"}


def _number(rng: random.Random) -> str:
    return rng.choice(["0.5", "0.25", "1", "2", "0.1", "1e-2", "0.9", "1.5", "3"])


def _coef(rng: random.Random, params: list[str]) -> str:
    options = [_number(rng)]
    if params:
        options += [
            rng.choice(params),
            f"{rng.choice(params)}*{_number(rng)}",
            f"(1 - {rng.choice(params)})",
        ]
    return rng.choice(options)


def generate_program(rng: random.Random) -> str:
    """A random network that the language accepts: states, lags, params, locals, blocks."""
    states = rng.sample(STATE_NAMES, rng.randint(1, 3))
    params = []
    lines = [f"network Fuzz{rng.randint(0, 999)} {{", f"    state {', '.join(states)}"]
    for i in range(rng.randint(0, 3)):
        name = f"p{i}"
        params.append(name)
        kind = rng.random()
        if kind < 0.25:
            lines.append(f"    param {name} = k/(k+{rng.randint(1, 5)})")
        elif kind < 0.5:
            lines.append(
                f"    param {name} = {rng.choice(['0.5', '0.25', '1.0'])} learnable positive"
            )
        elif kind < 0.65:
            lines.append(f"    param {name} = 0.5 learnable per_layer in (0, 1)")
        else:
            lines.append(f"    param {name} = {_number(rng)}")
    blocks = ["T", "G"][: rng.randint(1, 2)]
    for b in blocks:
        act = rng.choice(["relu", "gelu", "tanh", "identity"])
        lines.append(
            f"    block {b} = {rng.choice(['mlp(hidden=2*dim, act=' + act + ')', 'mlp()', 'linear()'])}{rng.choice(['', ' shared'])}"
        )
    lines.append(f"    layers {rng.randint(1, 4)}")
    if len(states) > 1 and rng.random() < 0.5:
        lines.append(f"    init {states[1]} = {rng.choice([states[0], '0', 'input'])}")
    lines.append("    update {")
    defined: list[str] = []
    locals_: list[str] = []
    for s in states:
        if rng.random() < 0.3:
            local = f"g{len(locals_)}"
            lines.append(f"        {local} = {rng.choice(blocks)}({rng.choice(states)})")
            locals_.append(local)
        terms = [s]
        for _ in range(rng.randint(1, 4)):
            atom = rng.choice(
                [
                    f"{rng.choice(blocks)}({rng.choice(states)})",
                    f"{rng.choice(blocks)}({s} - {rng.choice(states)})",
                    f"({rng.choice(states)} - {s})",
                    f"({s} - {s}-)",
                    f"{rng.choice(states)}[k-2]",
                    f"{rng.choice(states)}[0]",
                ]
                + [f"({d}+ - {s})" for d in defined]
                + locals_
            )
            terms.append(f"{rng.choice(['+', '-'])} {_coef(rng, params)}*{atom}")
        lines.append(f"        {s}+ = {' '.join(terms)}")
        defined.append(s)
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


TOKENS = [
    "x",
    "x+",
    "x-",
    "(",
    ")",
    "+",
    "-",
    "*",
    "/",
    "=",
    ";",
    "\n",
    "{",
    "}",
    "T(x)",
    "k",
    "0",
    "1e999",
    "input",
    "dim",
    "sum(i = 0..k, g[i])",
    "[",
    "]",
    "state",
    "param",
    "block",
    "layers",
    "update",
    ",",
    "..",
    '"',
    "é",
    "\\",
    "lambda",
    "x[k+1]",
    "x[0]",
    "x[k-5]",
    "relu(",
    "learnable",
    "in [0, 1)",
    "positive",
    "shared",
    "equilibrium",
    "99999999999999999999",
    "(" * 50,
    "a" * 300,
    "\t",
    "\x00",
    "🙂",
]


def mutate(rng: random.Random, text: str) -> str:
    """Token deletions, duplications, swaps, insertions of random or hostile tokens."""
    parts = list(text)
    for _ in range(rng.randint(1, 5)):
        op = rng.random()
        if not parts:
            parts = list(rng.choice(TOKENS))
        pos = rng.randrange(len(parts))
        if op < 0.3:
            del parts[pos : pos + rng.randint(1, 6)]
        elif op < 0.45:
            parts[pos:pos] = parts[pos : pos + rng.randint(1, 8)]
        elif op < 0.6:
            other = rng.randrange(len(parts))
            parts[pos], parts[other] = parts[other], parts[pos]
        else:
            parts.insert(pos, rng.choice(TOKENS))
    return "".join(parts)


def catalog_texts() -> list[str]:
    return [p.read_text() for p in sorted(EXAMPLES.glob("*.opt"))]


def check_compile(text: str) -> dict[str, str] | None:
    """The fuzzing property: sources that are valid, black-clean and import only torch and
    the standard library, or an OptgenError located inside the text; nothing else."""
    try:
        with warnings.catch_warnings():
            # Random rules often fail their convergence conditions: a warning, not a finding.
            warnings.simplefilter("ignore", optgen.OptgenWarning)
            outputs = optgen.compile_source(text, "fuzz.opt")
    except optgen.OptgenError as err:
        text = text.removeprefix("\ufeff")  # not part of the text (optgen.source)
        lines = text.split("\n")
        for d in err.diagnostics:
            assert 1 <= d["line"] <= len(lines), (d, text)
            assert 1 <= d["col"] <= len(lines[d["line"] - 1]) + 1, (d, text)
            assert d["message"], (d, text)
        return None
    for name, source in outputs.items():
        tree = ast.parse(source)
        # compile_source formats as black's defaults do (a destination without settings).
        assert black.format_str(source, mode=black.Mode()) == source, name
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                local = {n[:-3] for n in outputs}
                assert {m.split(".")[0] for m in modules} <= ALLOWED_IMPORTS | local, (
                    name,
                    modules,
                )
    return outputs


def solved_tightly(module):
    """Implicit modules: a fixed-point solve far below float64 noise, unrolled backward."""
    if hasattr(module, "solver"):
        module.solver = {"name": "fixed_point", "max_iter": 200, "tol": 1e-10}
        module.backward = {"name": "unroll"}
    return module


def check_runs(outputs: dict[str, str]) -> None:
    """Every module of `outputs` runs forward and passes gradcheck in float64, and its
    generated gradient test passes (the parameters autograd leaves without a gradient
    are exactly those optgen's liveness analysis declares unreachable)."""
    import torch

    for name, source in outputs.items():
        if name.startswith("test_"):
            continue
        stem = name[:-3]
        generated = types.ModuleType(stem)
        exec(compile(source, name, "exec"), generated.__dict__)
        cls = getattr(generated, generated.__all__[0])
        torch.manual_seed(0)
        module = solved_tightly(cls(3, depth=2).double())
        x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        assert module(x).shape == x.shape
        assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)

        run_generated_tests(outputs, name, generated, only="test_every_parameter_gets_a_gradient")


def load_modules(outputs: dict[str, str]) -> dict[str, types.ModuleType]:
    """Every module of `outputs` imported (as `exec` of its text) and its class constructed
    at a small size: what `import` and `Class(dim)` do for a user after exit 0."""
    import re

    import torch

    loaded = {}
    for name, source in outputs.items():
        if name.startswith("test_"):
            continue
        generated = types.ModuleType(name[:-3])
        exec(compile(source, name, "exec"), generated.__dict__)
        # At the size its generated test picks (a transformer needs dim divisible by heads).
        test = outputs.get(f"test_{name}", "")
        dim = re.search(r"^DIM = (\d+)$", test, re.M)
        for class_name in generated.__all__:
            torch.manual_seed(0)
            cls = getattr(generated, class_name)
            if dim is None:  # a model: its own input size and widths
                cls()
            else:
                cls(int(dim.group(1)), depth=2)
        loaded[name] = generated
    return loaded


def run_generated_tests(
    outputs: dict[str, str], name: str, generated: types.ModuleType, only: str | None = None
) -> int:
    """The generated test file of module `name` run in this process (its test functions
    take no argument): every test, or `only` the one named. Returns how many ran."""
    stem = name[:-3]
    # The generated test file imports its module by name, as beside it on disk.
    sys.modules[stem] = generated
    try:
        test_namespace: dict = {"__name__": f"test_{stem}"}
        exec(compile(outputs[f"test_{name}"], f"test_{name}", "exec"), test_namespace)
        tests = [
            fn
            for key, fn in test_namespace.items()
            if key.startswith("test_") and callable(fn) and (only is None or key == only)
        ]
        for test in tests:
            test()
        return len(tests)
    finally:
        del sys.modules[stem]


# ---------------------------------------------------------------- issue 16: shapes of input
# Separator runs, long sums, extreme numbers, names from the reserved sets, colliding
# names: each a valid program but for the one hostile part.
# Extreme in form, and either refused or tame in value: past float64 (1e309), past float32
# as written (1e307, 1e39) or as the module computes it (t*t with t = 1e20) is refused; a
# coefficient inside float32 but large (1e30) would overflow the forward of any rule, so
# the tame side stays small (docs/robustness.md, "Numbers").
EXTREME_NUMBERS = [
    "1e309",
    "1e200*1e200",
    "1e-200*1e-200",
    "1e300*1e-300",
    "1e-307",
    "1e307",
    "3.5e38",
    "1e-39",
    "1e20*1e20",
    "1e-30",
    "1e30*1e-31",
    "0.0",
    "0." + "0" * 300 + "5",
    "9" * 400,
]


def _reserved_words(rng: random.Random, count: int) -> list[str]:
    from optgen import naming

    pools = [
        sorted(naming.generated_names()),
        sorted(naming.module_attributes()),
        sorted(naming.module_names()),
    ]
    return [rng.choice(rng.choice(pools)) for _ in range(count)]


def _camel(word: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in word.split("_")) or "A"


# Keys of a custom block's arguments: Python keywords and soft keywords, the generated
# constructor's own names, optgen's own keys, and plain ones.
CUSTOM_KEYS = [
    "class", "lambda", "None", "True", "False", "def", "import", "pass", "yield", "await",
    "match", "case", "type", "_", "self", "dim", "depth", "kwargs", "args", "torch", "nn",
    "F", "layout", "universal", "hidden", "width", "a" * 200, "é", "__class__", "__init__",
]  # fmt: skip
CUSTOM_VALUES = [
    "1", "0", "-3", "2.5", "1e-3", "1e309", "true", "false", "none", "dim", "2*dim",
    "dim/2", '""', '"a b"', "\"it's\"", '"{x}"', '"%s"', '"\u202e"', "relu", "k",
]  # fmt: skip
# Line breaks that are not `\n` and a byte-order mark (optgen.source: only `\n` ends a line).
ODD_BREAKS = ["\r", "\x0c", "\x85", "\u2028", "\u2029", "\x0b", "\r\n"]


def _custom_block(rng: random.Random) -> str:
    keys = rng.sample(CUSTOM_KEYS, rng.randint(1, 3))
    args = "".join(f", {key}={rng.choice(CUSTOM_VALUES)}" for key in keys)
    return f'custom("torch.nn:Identity"{args})'


def _odd_text(rng: random.Random, text: str) -> str:
    """`text` with a BOM, comments holding odd line breaks, lines ended by `\r\n`."""
    lines = text.split("\n")
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(lines))
        lines[at] += f" # c{rng.choice(ODD_BREAKS)}d{rng.choice(ODD_BREAKS)}"
    text = ("\r\n" if rng.random() < 0.3 else "\n").join(lines)
    if rng.random() < 0.3:  # an error after the odd comments: its line and column must hold
        text = text.replace("x - t*T(x)", "x - t*T(x) +")
    return ("\ufeff" if rng.random() < 0.6 else "") + text


def hostile_program(rng: random.Random) -> str:
    """A network with one shape that broke the compiler or its outputs (issue 16)."""
    kind = rng.choice(
        ["separators", "long_sum", "number", "reserved", "collision", "custom_key", "text"]
    )
    name, param, sep = "Hostile", "t = 0.5", "\n"
    update = "x+ = x - t*T(x)"
    block = "mlp()"
    if kind == "separators":
        sep = rng.choice(["\n", ";", "#\n", " \n", "\r\n"]) * rng.randint(1, 20_000)
    elif kind == "long_sum":
        n = rng.randint(50, 800)
        term = rng.choice([" + 0.001*T(x)", " - 0.5*(x - x-)", " + t*T(x)"])
        update = rng.choice([f"x+ = x{term * n}", f"x+ = {'-' * (2 * n)}x - t*T(x)"])
    elif kind == "number":
        param = f"t = {rng.choice(EXTREME_NUMBERS)}{rng.choice(['', '', ' learnable'])}"
        if rng.random() < 0.5:
            update = f"x+ = x - {rng.choice(EXTREME_NUMBERS)}*T(x)"
        elif rng.random() < 0.5:  # derived: the product the module computes, 1e40
            param = f"t = {rng.choice(['1e20', '1e-20', '1e5', '1e-15'])}"
            update = rng.choice(["x+ = x - t*t*T(x)", "x+ = x - (t/(1 - t))*T(x)"])
    elif kind == "reserved":
        word = _reserved_words(rng, 1)[0]
        if rng.random() < 0.5:
            name = _camel(word) if rng.random() < 0.7 else word
        else:
            param = f"{word} = 0.5 learnable"
            update = f"x+ = x - {word}*T(x)"
    elif kind == "custom_key":
        block = _custom_block(rng)
    body = f"network {name} {{{sep}state x{sep}param {param}{sep}block T = {block}{sep}"
    text = body + f"update {{{sep}{update}{sep}}}{sep}}}\n"
    if kind == "text":
        text = _odd_text(rng, text)
    if kind == "collision":
        base = f"Net{rng.randint(0, 99)}"
        other = rng.choice([f"Test{base}", base, f"{base[:3]}_{base[3:]}"])
        text += text.replace("Hostile", other)
        text = text.replace("Hostile", base, 1)
    return text


def write_with_failures(rng: random.Random, text: str, folder: Path) -> None:
    """`optgen compile` of `text` into `folder`, with a file-system refusal injected after
    a random number of files (a full disk, a folder made read-only part-way): exit 0 or 1,
    never 2, and after exit 1 the folder holds exactly what it held before."""
    import errno
    import os

    from optgen import cli
    from optgen import output as output_tree

    source = folder / "hostile.opt"
    source.write_text(text)
    out = folder / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else {}
    budget = rng.randint(0, 3)
    code = rng.choice([errno.ENOSPC, errno.EROFS, errno.EACCES])
    real = output_tree._write_temporary

    def failing(output, mode):
        nonlocal budget
        if budget == 0:
            raise OSError(code, os.strerror(code), str(output.path))
        budget -= 1
        return real(output, mode)

    output_tree._write_temporary = failing
    try:
        status = cli.main(["compile", str(source), "-o", str(out)])
    finally:
        output_tree._write_temporary = real
    assert status in (0, 1), status
    if status == 1:
        after = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else {}
        assert after == before, (sorted(before), sorted(after))
