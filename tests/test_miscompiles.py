"""Miscompiles found by checking the compiler against the language's definition, each
named after its defect; the expected figures are computed from docs/language.md by hand."""

import pytest
import torch

import optgen

SUM_BUG = """
network SumBug {
    state x, m
    param t = 0.5
    block T = custom("torch.nn:Identity", universal=no)
    layers 1
    update {
        x+ = x - t*T(x)
        m+ = sum(i = 0..k, x[i])
    }
    output m
}
"""


@pytest.mark.parametrize("depth, expected", [(1, 1.0), (2, 1.5), (3, 1.75)])
def test_sum_bug_a_sum_after_the_update_reads_the_state_before_it(depth, expected):
    # x_k = 0.5^k from x_0 = 1, and m_{k+1} = x_0 + ... + x_k: 1, 1.5, 1.75. The module
    # wrote x+ over x before the sum read x[k], and gave 0.5, 0.75, 0.875.
    (cls,) = optgen.loads(SUM_BUG, "sum_bug.opt").values()
    module = cls(1, depth=depth)
    assert module(torch.ones(1, 1)).item() == expected


def test_sum_bug_a_sum_before_the_update_still_writes_in_place():
    # The fix keeps the in-place write where nothing reads the old state afterwards.
    text = SUM_BUG.replace(
        "x+ = x - t*T(x)\n        m+ = sum(i = 0..k, x[i])",
        "m+ = sum(i = 0..k, x[i])\n        x+ = x - t*T(x)",
    )
    code = optgen.compile_source(text, "sum_first.opt")["sum_bug.py"]
    assert "x_next" not in code
    (cls,) = optgen.loads(text, "sum_first.opt").values()
    assert cls(1, depth=3)(torch.ones(1, 1)).item() == 1.75


HALPERN = """
network Halpern {
    state x
    param t = 0.5
    param lam = 1/(k+2)
    block T = mlp(hidden=2*dim, act=relu)
    layers 8
    update {
        x+ = lam*x[0] + (1-lam)*(x - t*T(x))
    }
    output x
}
"""


def test_halpern_an_anchor_coefficient_in_k_is_differenced_exactly():
    # Layer 0 of Halpern's iteration is a gradient step, x1 = x0 - (1 - lam0)*t*T(x0), with
    # h = 0.25: the analysis said "not consistent at k=0, h = 0", having differenced the
    # update as if lam were the same at consecutive layers.
    (cert,) = optgen.check_source(HALPERN, "halpern.opt")
    assert cert["consistent"] is True
    assert cert["steps"] == {"T": 0.25}


def test_halpern_the_differenced_recurrence_reproduces_the_iterates():
    # With a linear block T(x) = c*x, the analysed recurrence (x_{k+1} from x_k, x_{k-1}) must
    # give the iterates of the rule as written, x_{k+1} = lam_k x_0 + (1 - lam_k)(x_k - t c x_k).
    import sympy

    from optgen import api, ir
    from optgen.analysis.recurrence import reduce_rule

    (net,) = api.frontend(HALPERN, "halpern.opt").networks
    rec = reduce_rule(net)
    c, t, x0 = sympy.Rational(3, 7), sympy.Rational(1, 2), sympy.Integer(1)
    written = [x0]
    for k in range(8):
        lam = sympy.Rational(1, k + 2)
        written.append(lam * x0 + (1 - lam) * (written[-1] - t * c * written[-1]))
    values = {p.symbol: p.value for p in net.params}
    slots = {slot: i for i, slot in enumerate(rec.slots)}
    analysed = [x0, None]
    for k in range(8):

        def at(lag):  # x_{k+lag}, lag <= 0; x_{-1} is never read at layer 0
            return analysed[k + lag] if k + lag >= 0 else sympy.Integer(0)

        row = rec.matrix.row(slots[("x", 0)])
        nxt = sum(row[slots[(s, lag)]] * at(lag) for (s, lag) in rec.slots)
        for call in rec.calls:
            (arg,) = [lag for (_, lag), _ in call.arg_now] or [0]
            weight = dict(call.weights)["x"]
            nxt -= weight * c * at(arg)
        nxt = sympy.sympify(nxt).xreplace(values).subs(ir.K, k)
        analysed[k + 1 : k + 2] = [sympy.nsimplify(nxt), None]
    assert [sympy.nsimplify(v) for v in analysed[:9]] == written
