"""The user documentation stays true: every `.opt` example of docs/language.md compiles (or,
when marked as an error example, fails with the message shown), and no document points at
files outside the repository."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import optgen

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = ROOT / "docs" / "language.md"
FENCE = re.compile(r"^(`{3,})(.*)$")


@dataclass(frozen=True)
class CodeBlock:
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string (`opt`, `text`, ...)
    text: str
    before: str  # the last non-blank line before the fence


def code_blocks(markdown: str) -> list[CodeBlock]:
    """The fenced code blocks of a markdown text, in order."""
    lines = markdown.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group(1), match.group(2).strip()
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        assert end < len(lines), f"docs/language.md:{i + 1}: unclosed code block"
        blocks.append(CodeBlock(i + 1, info, "\n".join(lines[i + 1 : end]) + "\n", before))
        i = end + 1
    return blocks


def is_error_example(block: CodeBlock) -> bool:
    return "error" in block.before.lower()


BLOCKS = code_blocks(LANGUAGE.read_text(encoding="utf-8"))
EXAMPLES = [(i, b) for i, b in enumerate(BLOCKS) if b.text.lstrip().startswith("network ")]


def test_the_reference_has_examples_of_both_kinds():
    assert len(EXAMPLES) >= 8
    assert any(is_error_example(b) for _, b in EXAMPLES)
    assert any(not is_error_example(b) for _, b in EXAMPLES)


@pytest.mark.parametrize("index, block", EXAMPLES, ids=[f"line{b.line}" for _, b in EXAMPLES])
def test_example_compiles_or_fails_as_shown(index: int, block: CodeBlock):
    where = f"docs/language.md:{block.line}"
    if not is_error_example(block):
        try:
            files = optgen.compile_source(block.text, "rule.opt")
        except optgen.OptgenError as err:
            pytest.fail(f"{where}: the example does not compile:\n{err}")
        assert files, where
        return
    with pytest.raises(optgen.OptgenError) as caught:
        optgen.compile_source(block.text, "rule.opt")
    # The text block right after an error example, when there is one, is its message.
    following = BLOCKS[index + 1] if index + 1 < len(BLOCKS) else None
    if following is not None and following.text.startswith("rule.opt:"):
        assert str(caught.value).strip() == following.text.strip(), where


def test_the_example_of_the_api_section_holds():
    with pytest.raises(optgen.OptgenError) as caught:
        optgen.compile_source("network A { state x; update { x+ = x*x } }")
    assert caught.value.diagnostics[0]["message"] == "product of two tensor expressions: 'x*x'"
    assert "product of two tensor expressions: 'x*x'" in LANGUAGE.read_text(encoding="utf-8")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*") if p.is_file())]


def test_no_document_points_outside_the_repository():
    offending = [
        str(path.relative_to(ROOT)) for path in documents() if b"shared/design" in path.read_bytes()
    ]
    assert not offending, f"these documents mention shared/design: {offending}"


def test_relative_links_of_the_reference_exist():
    text = LANGUAGE.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        path = (LANGUAGE.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{target} lies outside the repository"
        assert path.exists(), f"{target} does not exist"
