"""What a generated module holds for deep networks (issue 16, point 1): a deep k-dependent
rule's per-layer certificate is summarised in the file and whole in `check --json`."""

import json

from conftest import run_optgen

import optgen

DEEP = """
network DeepK {
    state x, y
    init y = x
    param t = 0.5
    param beta = k/(k+3)
    block T = linear()
    layers 3000
    update {
        x+ = y - t*T(y)
        y = x+ + beta*(x+ - x)
    }
}
"""


def test_a_deep_per_layer_certificate_is_summarised_in_the_module(opt_file):
    source = optgen.compile_source(DEEP, "deep.opt")["deep_k.py"]
    shallow = optgen.compile_source(DEEP.replace("layers 3000", "layers 8"), "deep.opt")
    deeper = optgen.compile_source(DEEP.replace("layers 3000", "layers 6000"), "deep.opt")
    # Not 3,000 numbers twice: the length does not grow with the depth, and it is an
    # 8-layer file's plus fixed-size notes (the limit of the exact checks past layer 128).
    assert len(source) == len(deeper["deep_k.py"])
    assert len(source) < len(shallow["deep_k.py"]) + 1000
    namespace: dict = {}
    exec(compile(source, "deep_k.py", "exec"), namespace)
    summary = namespace["DeepK"].CERTIFICATE["per_layer_summary"]
    assert summary["layers"] == 3000 and summary["whole"] == "optgen check --json"
    low, high = summary["spectral_radius"]
    assert low <= high and 0 <= summary["worst_layer"] < 3000
    assert namespace["DeepK"].CERTIFICATE["per_layer"] is None
    listing = json.loads(run_optgen("check", str(opt_file(DEEP, "deep.opt")), "--json").stdout)
    assert len(listing[0]["per_layer"]) == 3000 and "per_layer_summary" not in listing[0]
    assert max(listing[0]["per_layer"]) == high


def test_a_shallow_per_layer_certificate_stays_whole_in_the_module():
    source = optgen.compile_source(DEEP.replace("layers 3000", "layers 8"), "deep.opt")
    namespace: dict = {}
    exec(compile(source["deep_k.py"], "deep_k.py", "exec"), namespace)
    assert len(namespace["DeepK"].CERTIFICATE["per_layer"]) == 8
