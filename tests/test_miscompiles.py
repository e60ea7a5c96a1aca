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
