"""How generated files are formatted: by the rules black would apply where they land.

A generated file must pass the destination repository's own `black --check`, so it is
formatted with the configuration black would use for it: the `[tool.black]` table of the
nearest `pyproject.toml` above the output directory that has one, and black's defaults
(88 columns) where none has. `--line-length` overrides the line length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import black

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: black's own dependency
    import tomli as tomllib

DEFAULT_LINE_LENGTH = black.DEFAULT_LINE_LENGTH  # 88


@dataclass(frozen=True)
class Formatting:
    """The black settings generated files are written with, and where they came from."""

    line_length: int = DEFAULT_LINE_LENGTH
    target_versions: frozenset[str] = frozenset()  # black's names: "py310", ...
    skip_string_normalization: bool = False
    skip_magic_trailing_comma: bool = False
    preview: bool = False
    config: str | None = None  # the pyproject.toml read, None for black's defaults

    def mode(self) -> black.Mode:
        return black.Mode(
            line_length=self.line_length,
            target_versions={
                black.TargetVersion[v.upper()]
                for v in self.target_versions
                if v.upper() in black.TargetVersion.__members__
            },
            string_normalization=not self.skip_string_normalization,
            magic_trailing_comma=not self.skip_magic_trailing_comma,
            preview=self.preview,
        )

    def format(self, text: str) -> str:
        return black.format_str(text, mode=self.mode())


def _existing(directory: Path) -> Path:
    """`directory`, or its nearest existing parent (an output folder may not exist yet)."""
    directory = directory.absolute()
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory


def _black_settings(directory: Path) -> tuple[str | None, dict]:
    """The nearest `pyproject.toml` at or above `directory` with a `[tool.black]` table,
    and that table (keys as black's options: `line_length`, ...)."""
    for folder in (directory, *directory.parents):
        candidate = folder / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            with candidate.open("rb") as handle:
                has_table = "black" in tomllib.load(handle).get("tool", {})
            # black's reading: option names as its own, a target inferred from the project.
            settings = black.parse_pyproject_toml(str(candidate)) if has_table else {}
        except (OSError, ValueError):  # unreadable or invalid TOML: not a configuration
            continue
        if has_table:
            return str(candidate), settings
    return None, {}


def for_directory(directory: Path, line_length: int | None = None) -> Formatting:
    """The formatting black would apply to a new file in `directory`."""
    config_path, settings = _black_settings(_existing(directory))
    versions = settings.get("target_version") or ()
    if isinstance(versions, str):
        versions = (versions,)
    return Formatting(
        line_length=line_length or int(settings.get("line_length", DEFAULT_LINE_LENGTH)),
        target_versions=frozenset(str(v).lower() for v in versions),
        skip_string_normalization=bool(settings.get("skip_string_normalization", False)),
        skip_magic_trailing_comma=bool(settings.get("skip_magic_trailing_comma", False)),
        preview=bool(settings.get("preview", False)),
        config=config_path,
    )


BLACK_DEFAULTS = Formatting()
