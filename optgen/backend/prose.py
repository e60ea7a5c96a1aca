"""Prose that fits the destination's line length: comments, docstrings, long strings.

black wraps code, never a comment, a docstring or a string. The generated file's prose
(the rule quoted above each statement, docstrings of its classes and of the runtime it
copies, the certificate's sentences) is wrapped here, to the line length black formats
the file with: `wrap_prose` splits each full-line comment and docstring line that runs
past it (never joining lines, so a list or a rule stays one item a line), and
`split_string` cuts a long string literal into pieces for an implicit concatenation.
"""

from __future__ import annotations

import ast as pyast
import io
import tokenize
import unicodedata


def width_of(text: str) -> int:
    """Columns a line takes in an editor (and for ruff's E501): wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _lines_of(node: pyast.AST) -> range:
    return range(node.lineno, node.end_lineno + 1)


def _docstrings(tree: pyast.Module) -> dict[int, int]:
    """Each line (1-based) inside a docstring, with the column its opening quotes sit at."""
    found: dict[int, int] = {}
    for node in pyast.walk(tree):
        if not isinstance(node, (pyast.Module, pyast.ClassDef, pyast.FunctionDef)):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], pyast.Expr)
            and isinstance(body[0].value, pyast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            for line in _lines_of(body[0]):
                found[line] = body[0].col_offset
    return found


def comment_lines(source: str) -> set[int]:
    """The lines (1-based) that hold a comment and nothing else."""
    code, comments = set(), set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments.add(token.start[0])
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code.update(range(token.start[0], token.end[0] + 1))
    return comments - code


def _fill(text: str, first: int, rest: int) -> list[str]:
    """`text` in lines of at most `first`, then `rest` columns (a word longer stays whole)."""
    words = text.split(" ")
    lines = [words[0]]
    for word in words[1:]:
        limit = first if len(lines) == 1 else rest
        if width_of(lines[-1]) + 1 + width_of(word) <= limit:
            lines[-1] += " " + word
        elif not lines[-1].strip():  # a line holds one word at least
            lines[-1] += word if len(lines) > 1 else " " + word
        elif word:
            lines.append(word)
    return [line.rstrip() for line in lines]  # black strips a docstring's trailing blanks


def _hanging(content: str, indent: int, base: int) -> int:
    """The indentation of a docstring line's continuation: a bullet's text, four more
    for an item below the docstring's own margin (an argument, a rule, a certificate
    line), the line's own otherwise."""
    if content.startswith("- "):
        return indent + 2
    return indent + 4 if indent > base else indent


def wrap_prose(source: str, width: int) -> str:
    """`source` with every full-line comment and docstring line longer than `width`
    split at spaces into lines that fit, the code untouched."""
    lines = source.split("\n")
    if all(width_of(line) <= width for line in lines):
        return source
    docstrings = _docstrings(pyast.parse(source))
    comments = comment_lines(source)
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        if width_of(line) <= width:
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        if number in comments:
            text = line[indent:].removeprefix("#").removeprefix(" ")
            room = width - indent - 2
            out += [" " * indent + "# " + piece for piece in _fill(text, room, room)]
        elif number in docstrings:
            base = docstrings[number]
            content = line[indent:]
            if content.startswith('"""') and indent == base:  # the opening line
                head, content = '"""', content[3:]
                hang = base
            else:
                head, hang = "", _hanging(content, indent, base)
            pieces = _fill(content, width - indent - len(head), width - hang)
            out.append(" " * indent + head + pieces[0])
            out += [" " * hang + piece for piece in pieces[1:]]
        else:
            out.append(line)
    return "\n".join(out)


def split_string(text: str, room: int) -> list[str]:
    """`text` cut at spaces into pieces whose literals (quotes included) take at most
    `room` columns; each piece after the first starts with its space."""
    pieces = [""]
    for i, word in enumerate(text.split(" ")):
        candidate = pieces[-1] + (" " if i else "") + word
        if i and width_of(repr(candidate)) > room and pieces[-1].strip():
            pieces.append(" " + word)
        else:
            pieces[-1] = candidate
    return pieces
