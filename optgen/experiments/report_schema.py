"""What a report of an image experiment holds, checked before `--resume` trusts it.

`--resume` reads back a JSON file that anyone may have edited. Everything it keeps from the
file (the finished runs, other networks' entries) is checked here against the layout the
experiment writes, so that a changed type, a foreign entry or a run of a seed the settings
do not have is a clear refusal (exit 1, the file untouched) instead of a crash part-way or
a number averaged into the metrics.
"""

from __future__ import annotations

import numbers

NUMBER = (numbers.Real,)
OPTIONAL_NUMBER = (numbers.Real, type(None))

# The keys of a network's entry and the JSON types each may hold.
ENTRY = {
    "class": (str,),
    "source": (str,),
    "module": (str,),
    "module_sha256": (str,),
    "family": (str,),
    "family_description": (str,),
    "rule": (str,),
    "baseline": (bool,),
    "params": (int,),
    "flops": (int, type(None)),
    "certificate": (dict,),
    "runs": (dict,),
    "metrics": (dict,),
    "wall_time_s": NUMBER,
}
# Keys an entry may lack: written from report format 2 on (versus_baseline: only a model
# whose family's baseline is in the report; recomputed from the runs at every write).
ENTRY_OPTIONAL = {"macs": (int, type(None)), "versus_baseline": (dict,)}
# The keys of one finished seed (`image_train.train_seed`, NaN stored as null).
RUN = {
    "test_error": OPTIONAL_NUMBER,
    "test_loss": OPTIONAL_NUMBER,
    "final_train_loss": OPTIONAL_NUMBER,
    "weight_norm": OPTIONAL_NUMBER,
    "curve": (list,),
    "wall_time_s": NUMBER,
    "world_size": (int,),
}
# Keys a run may lack (written by later versions): how it was executed.
RUN_OPTIONAL = {"runtime": (dict,)}
TOP = {
    "experiment": (str,),
    "settings": (dict,),
    "settings_digest": (str,),
    "data_digest": (str,),
    "complete": (bool,),
    "networks": (dict,),
}


class ReportMismatch(ValueError):
    """The report does not have the layout of an image experiment's report."""


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", dict: "an object"}
    names.update({list: "a list", type(None): "null", numbers.Real: "a number"})
    return " or ".join(names.get(t, t.__name__) for t in types)


def _is(value, types: tuple[type, ...]) -> bool:
    # JSON's true and false are ints to Python: a bool is only a bool here.
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _check_fields(value, layout: dict, where: str, optional: dict | None = None) -> None:
    optional = optional or {}
    if not isinstance(value, dict):
        raise ReportMismatch(f"{where} is {type(value).__name__}, not an object")
    missing = [key for key in layout if key not in value]
    if missing:
        raise ReportMismatch(f"{where} has no {', '.join(missing)}")
    foreign = [key for key in value if key not in layout and key not in optional]
    if foreign:
        raise ReportMismatch(f"{where} has keys no report holds: {', '.join(foreign)}")
    for key, types in {**layout, **optional}.items():
        if key in value and not _is(value[key], types):
            raise ReportMismatch(
                f"{where}: {key} is {json_type(value[key])}, not {_type_names(types)}"
            )


def json_type(value) -> str:
    """The JSON word for a value's type: what the user sees in the file."""
    if isinstance(value, bool):
        return "true or false"
    return _type_names((type(value),)) if value is not None else "null"


def check_report(report, seeds: int) -> None:
    """Raise `ReportMismatch` unless `report` has the layout of a report, with runs only of
    seeds 0 .. seeds - 1 (a run of another seed would be averaged into the metrics)."""
    _check_fields_present(report)
    for label, entry in report["networks"].items():
        where = f"network {label}"
        _check_fields(entry, ENTRY, where, ENTRY_OPTIONAL)
        for seed, run in entry["runs"].items():
            if not (seed.isdigit() and str(int(seed)) == seed and int(seed) < seeds):
                raise ReportMismatch(
                    f"{where} has a run of seed {seed!r}, but this run has seeds 0 to"
                    f" {seeds - 1}"
                )
            _check_fields(run, RUN, f"{where}, seed {seed}", RUN_OPTIONAL)
            bad = [v for v in run["curve"] if not _is(v, OPTIONAL_NUMBER)]
            if bad:
                raise ReportMismatch(f"{where}, seed {seed}: its curve holds {json_type(bad[0])}")


def _check_fields_present(report) -> None:
    if not isinstance(report, dict):
        raise ReportMismatch(f"it holds {json_type(report)}, not an object")
    for key, types in TOP.items():
        if key not in report:
            raise ReportMismatch(f"it has no {key}")
        if not _is(report[key], types):
            raise ReportMismatch(f"its {key} is {json_type(report[key])}, not {_type_names(types)}")
