"""Progress of experiment runs on stderr (issue 28, point 3): a bar on a terminal, one
plain line per epoch (a tenth of a synthetic run) in a log, nothing with -q."""

import io

from conftest import run_optgen

from optgen.experiments.progress import Bars, LogLines, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_follows_the_stream_and_quiet():
    assert Progress.for_stream(Terminal()) is Progress.BAR
    assert Progress.for_stream(io.StringIO()) is Progress.LINES
    assert Progress.for_stream(Terminal(), quiet=True) is Progress.OFF
    assert Progress.of(True) is Progress.BAR and Progress.of(False) is Progress.OFF


def test_a_log_gets_one_line_every_so_many_steps_of_each_run():
    log = io.StringIO()
    with LogLines(total=8, every=2, desc="mnist", stream=log) as bar:
        for what in ("deep_gd seed 0", "deep_gd seed 1"):
            bar.set_postfix_str(what)
            for _ in range(4):
                bar.update(1)
    lines = [line.rsplit(",", 1)[0] for line in log.getvalue().splitlines()]
    assert lines == [
        "optgen: mnist deep_gd seed 0: step 2, 2 of 8 in all",
        "optgen: mnist deep_gd seed 0: step 4, 4 of 8 in all",
        "optgen: mnist deep_gd seed 1: step 2, 6 of 8 in all",
        "optgen: mnist deep_gd seed 1: step 4, 8 of 8 in all",
    ]


def test_an_experiment_in_a_log_prints_its_progress_lines(tmp_path):
    done = run_optgen(
        "experiment", "rings", "--quick", "--networks", "gd", "--out", str(tmp_path / "out")
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("optgen: rings gd:")]
    assert len(lines) == 10 and lines[-1].startswith("optgen: rings gd: step 150, 150 of 150")
    assert "\r" not in done.stderr  # no bar in a log


def test_a_terminal_gets_a_bar_of_the_runs_and_one_of_the_steps_of_each(capsys):
    with Bars(runs=2, steps=3, desc="mnist") as bars:
        for what in ("deep_gd seed 0", "deep_gd seed 1"):
            bars.set_postfix_str(what)
            for _ in range(3):
                bars.update(1)
            assert bars.run.n == 3 and bars.run.desc == what
    assert bars.overall.n == bars.overall.total == 2
    shown = capsys.readouterr().err
    assert "deep_gd seed 1" in shown and "2/2" in shown
