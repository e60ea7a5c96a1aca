"""How generated files are formatted: by the rules black would apply where they land.

A generated file must pass the destination repository's own `black --check`, so it is
formatted with the configuration black would use for a file in the output directory: the
`[tool.black]` table of the project's `pyproject.toml` (black's own search: the nearest
folder above holding `.git`, `.hg` or `pyproject.toml`, then the user's configuration),
and black's defaults where there is none. `--line-length` overrides the line length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import black

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


def for_directory(directory: Path, line_length: int | None = None) -> Formatting:
    """The formatting black would apply to a new file in `directory`."""
    probe = _existing(directory) / "__optgen_probe__.py"
    config_path = black.find_pyproject_toml((str(probe),))
    settings: dict = {}
    if config_path is not None:
        try:
            settings = black.parse_pyproject_toml(config_path)
        except (OSError, ValueError):  # unreadable or invalid TOML: black would stop too
            settings = {}
    versions = settings.get("target_version") or ()
    if isinstance(versions, str):
        versions = (versions,)
    return Formatting(
        line_length=line_length or int(settings.get("line_length", DEFAULT_LINE_LENGTH)),
        target_versions=frozenset(str(v).lower() for v in versions),
        skip_string_normalization=bool(settings.get("skip_string_normalization", False)),
        skip_magic_trailing_comma=bool(settings.get("skip_magic_trailing_comma", False)),
        preview=bool(settings.get("preview", False)),
        config=config_path if settings else None,
    )


BLACK_DEFAULTS = Formatting()
