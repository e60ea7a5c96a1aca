"""The statistics of the experiments and the tables of docs/experiments.md made from their
JSON (issue 26, point 3): sample std, 95 % intervals, paired differences, trivial
baselines, and every marked table of the docs regenerated and compared."""

import json
import math
from pathlib import Path

import pytest
from conftest import ROOT

from optgen.experiments.images import _percent, _versus, refresh_statistics
from optgen.experiments.stats import majority_error, paired, summarize, t_975
from optgen.experiments.tables import MARK, TableError, main, refresh, render

DOCS = ROOT / "docs"


def test_t_quantiles_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 400):
        assert abs(t_975(df) - stats.t.ppf(0.975, df)) < 1e-4, df
    with pytest.raises(ValueError):
        t_975(0)


def test_a_summary_gives_the_sample_std_and_the_t_interval():
    s = summarize([1.0, 2.0, 3.0, math.nan])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3 and s["diverged"] == 1
    assert s["ci95"] == pytest.approx(4.3027 / math.sqrt(3))
    assert s["values"] == [1.0, 2.0, 3.0, None]
    one = summarize([0.5])
    assert one["std"] == 0.0 and one["ci95"] is None
    assert summarize([None, math.inf])["mean"] is None


def test_paired_differences_keep_only_the_seeds_both_have():
    d = paired([0.08, 0.084, 0.07, None], [0.057, 0.066, 0.056, 0.06])
    assert d["n"] == 3 and d["values"] == pytest.approx([0.023, 0.018, 0.014])
    assert d["mean"] == pytest.approx(0.055 / 3)
    # Pairing removes what a seed shares: the same offset on every seed has no spread.
    assert paired([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])["std"] == 0.0


def test_the_trivial_classifier_takes_the_most_frequent_training_class():
    assert majority_error([5, 9, 1], [10, 30, 60]) == pytest.approx(0.7)


def _entry(family, rule, errors):
    runs = {str(s): {"test_error": e, "test_loss": 1.0, "final_train_loss": 1.0} for s, e in enumerate(errors)}  # fmt: skip
    return {"family": family, "rule": rule, "baseline": rule == "gd", "runs": runs}


def test_each_model_is_paired_with_its_family_baseline():
    report = {
        "data": {"train_class_counts": [3, 1], "test_class_counts": [40, 60]},
        "networks": {
            "deep_gd": _entry("deep", "gd", [0.10, 0.12, 0.11]),
            "deep_apg2": _entry("deep", "apg2", [0.11, 0.12, None]),
            "wide_apg2": _entry("wide", "apg2", [0.2]),  # no wide_gd in this report
        },
    }
    refresh_statistics(report)
    versus = report["networks"]["deep_apg2"]["versus_baseline"]
    assert versus["baseline"] == "deep_gd" and versus["test_error"]["n"] == 2
    assert versus["test_error"]["mean"] == pytest.approx(0.005)
    assert "versus_baseline" not in report["networks"]["deep_gd"]
    assert "versus_baseline" not in report["networks"]["wide_apg2"]
    assert report["trivial"]["test_error"] == pytest.approx(0.6)


def test_every_table_of_the_docs_is_made_from_its_json():
    text = (DOCS / "experiments.md").read_text(encoding="utf-8")
    marked = MARK.findall(text)
    assert len(marked) >= 9  # rings, parity, telgarsky, mnist (2), isotropic, fashion-mnist (3)
    new, changed = refresh(text, DOCS)
    assert changed == [], "run: python -m optgen.experiments.tables docs/experiments.md"
    assert new == text


def test_a_cell_computed_by_hand():
    # mnist's wide_heavy_ball against wide_gd, seeds 0 / 1 / 2 (%): 8.0 / 8.4 / 7.0 and
    # 5.7 / 6.6 / 5.6; differences 2.3 / 1.8 / 1.4, mean 1.833, sample std 0.4509,
    # interval 4.3027 * 0.4509 / sqrt(3) = 1.12.
    table = render("images", DOCS / "experiments" / "mnist.json")
    row = next(line for line in table.splitlines() if line.startswith("| wide_heavy_ball "))
    assert "| 7.80 ± 0.72 | [6.01, 9.59] | +1.83 ± 1.12 |" in row


def test_a_stale_table_is_found_and_check_writes_nothing(tmp_path, capsys):
    report = json.loads((DOCS / "experiments" / "mnist.json").read_text(encoding="utf-8"))
    (tmp_path / "mnist.json").write_text(json.dumps(report), encoding="utf-8")
    page = tmp_path / "page.md"
    stale = "before\n<!-- table: seeds mnist.json -->\n| old |\n<!-- end table -->\nafter\n"
    page.write_text(stale, encoding="utf-8")
    assert main([str(page), "--check"]) == 1
    assert "tables differ from their JSON: seeds mnist.json" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == stale
    assert main([str(page)]) == 0
    fresh = page.read_text(encoding="utf-8")
    assert fresh.startswith("before\n") and fresh.endswith("<!-- end table -->\nafter\n")
    assert "| wide_gd | 5.70 | 6.60 | 5.60 |" in fresh
    assert main([str(page), "--check"]) == 0


def test_a_bad_marker_is_a_clear_error(tmp_path):
    with pytest.raises(TableError, match="no table kind 'bars'"):
        render("bars", tmp_path / "x.json")
    with pytest.raises(TableError, match="cannot read the report"):
        render("images", tmp_path / "missing.json")
    with pytest.raises(TableError, match="names no data files"):
        render("files", Path(DOCS / "experiments" / "mnist.json"))


def test_the_printed_lines_give_the_interval_and_the_paired_difference():
    report = {
        "data": {},
        "networks": {
            "deep_gd": _entry("deep", "gd", [0.10, 0.12, 0.11]),
            "deep_apg2": _entry("deep", "apg2", [0.11, 0.14, 0.12]),
        },
    }
    refresh_statistics(report)
    apg2 = report["networks"]["deep_apg2"]
    # Differences 1, 2 and 1 points: mean 1.33, sample std 0.577, t 4.303.
    assert _versus(apg2) == " (+1.33 ± 1.43 points against deep_gd, paired)"
    assert _percent(summarize([0.10, 0.12, 0.11])) == "11.00 ± 1.00 % (95 % interval 8.52 to 13.48)"
    assert _versus(report["networks"]["deep_gd"]) == ""


def test_a_network_not_run_yet_is_not_called_diverged():
    from optgen.experiments.tables import mean_std

    assert mean_std(summarize([])) == "not run"
    assert mean_std(summarize([math.nan, math.inf])) == "diverged"
    assert mean_std(summarize([0.1, math.nan]), 100, 2) == "10.00 ± 0.00 (1 diverged)"
