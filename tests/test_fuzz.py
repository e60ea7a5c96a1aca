"""Fuzzing in CI's quick form: 150 generated programs and 200 mutations of the catalog."""

import random
import time

import pytest
from conftest import assert_generated_tests_pass
from fuzzing import (
    catalog_texts,
    check_compile,
    check_runs,
    generate_program,
    hostile_program,
    mutate,
    write_with_failures,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


# 70 programs (150, then 100 before): a smoke test in the suite; the 10,000-case campaigns of
# bench/differential.py are where random programs are run at scale (docs/robustness.md).
@settings(max_examples=70, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.randoms(use_true_random=False))
def test_generated_programs_compile_to_clean_sources_or_located_errors(rng):
    text = generate_program(rng)
    outputs = check_compile(text)
    if outputs is not None and rng.random() < 0.15:
        check_runs(outputs)


def test_mutations_of_the_catalog_never_crash_or_hang():
    rng = random.Random(7)
    texts = catalog_texts()
    for _ in range(120):  # 200 before; the campaigns of bench/ run more
        text = mutate(rng, rng.choice(texts))
        # CPU time, with a wide margin: a loaded machine slows the wall clock, not the work.
        start = time.process_time()
        check_compile(text)
        assert time.process_time() - start < 60, text


@pytest.mark.parametrize(
    "text",
    [
        "network A { state x; block T = mlp(); layers 1000000000000\n update { x+ = x - T(x) } }",
        "network A { state x; block T = mlp(); update { x+ = "
        + "(" * 10000
        + "x"
        + ")" * 10000
        + " } }",
        "# "
        + "x" * 1_000_000
        + "\nnetwork A { state x; block T = mlp(); update { x+ = x - T(x) } }",
        "network A { state x; param t = 1e999999999; block T = mlp(); update { x+ = x - t*T(x) } }",
        "network A" + "a" * 100_000 + " { state x; update { x+ = x } }",
    ],
    ids=["huge_layers", "deep_nesting", "one_megabyte", "huge_number", "long_name"],
)
def test_hostile_inputs_are_handled_fast(text):
    # A bound on the work done (CPU time, a wide margin), never on wall time.
    start = time.process_time()
    check_compile(text)
    assert time.process_time() - start < 30


def test_generated_tests_of_random_valid_programs_pass(tmp_path):
    # What a user runs after `optgen compile`: the generated test file beside its module.
    # Random rules reach corners the catalog does not (blocks or params that never reach
    # the output, k-dependent rules consistent only for the first layers, ...).
    rng = random.Random(11)
    stems: set[str] = set()
    while len(stems) < 20:  # 30 before; the campaigns of bench/ run more
        outputs = check_compile(generate_program(rng))
        if outputs is None:
            continue
        stem = next(name[:-3] for name in outputs if not name.startswith("test_"))
        if stem in stems:  # one pytest run: module names must be unique
            continue
        stems.add(stem)
        folder = tmp_path / stem
        folder.mkdir()
        for name, source in outputs.items():
            (folder / name).write_text(source)
    assert_generated_tests_pass(tmp_path, tmp_path, timeout=600)


def test_hostile_shapes_compile_cleanly_or_are_located(tmp_path):
    # Issue 16's shapes: separator runs, long sums, extreme numbers, reserved names,
    # colliding names, some written through a failing file system.
    rng = random.Random(16)
    for case in range(40):  # 60 before
        text = hostile_program(rng)
        start = time.process_time()
        outputs = check_compile(text)
        assert time.process_time() - start < 60, text[:300]
        if outputs is not None and case % 4 == 0:
            check_runs(outputs)
        if case % 3 == 0:
            folder = tmp_path / str(case)
            folder.mkdir()
            write_with_failures(rng, text, folder)
