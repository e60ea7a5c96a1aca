"""Finds the grammar and templates, in a checkout and in an installed package alike."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_path(folder: str, name: str) -> Path:
    """`folder/name` inside the installed package, else at the root of the checkout."""
    for base in (_PACKAGE / folder, _PACKAGE.parent / folder):
        candidate = base / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"optgen resource {folder}/{name} is missing from the installation")


def resource_dir(folder: str) -> Path:
    for base in (_PACKAGE / folder, _PACKAGE.parent / folder):
        if base.is_dir():
            return base
    raise FileNotFoundError(f"optgen resource folder {folder}/ is missing from the installation")
