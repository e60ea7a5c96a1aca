"""Text to AST: runs the LALR parser on `opt.lark` and turns lark's errors into diagnostics."""

from __future__ import annotations

import functools
import hashlib
import io
import re
import sys
from pathlib import Path

import lark
from lark import Lark, Token, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive

from .. import cache
from ..errors import Diagnostic, OptgenError, Severity
from ..resources import resource_path
from ..source import SourceFile, Span
from . import ast

# How terminals are named to a user in "expected ..." messages.
EXPECTED_NAMES = {
    "NAME": "a name",
    "NEXT_NAME": "a name",
    "PREV_NAME": "a name",
    "NUMBER": "a number",
    "INT": "an integer",
    "STRING": 'a string "..."',
    "_SEP": "a new line or ';'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "ADJOINT": "'^'",  # `K^T(`: one more reading of a '^'
    "EQUAL": "'='",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "RANGE": "'..'",
    "$END": "the end of the file",
}

# Limits on the size of a text (docs/robustness.md, "Limits"): the compiler's work grows
# with both, so past them a text is refused with a located error, in bounded time.
# The characters that are not comments, blanks or separators: 100 times the largest file
# of the catalog and its models.
MAX_SIGNIFICANT_CHARS = 100_000
# How deeply calls, indexes and history sums nest inside one another (`T(T(T(x)))`): the
# analyses below the parser recurse into each. Sums, products and minus signs are not
# nesting: a sum of 10,000 terms is flat.
MAX_NESTING = 48
# Chunks of a text that count toward MAX_SIGNIFICANT_CHARS (a comment matches, unmeasured).
_SIGNIFICANT = re.compile(r"#[^\n]*|[^\s;#]+")

# Parser states recognised from examples (lark's match_examples), each with a hint.
SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "a statement must end before the next one starts; put it on its own line or after ';'": [
        "network A { state x y }",
        "network A { update { x+ = x y+ = x } }",
        "network A { update { x+ = x - t*T(x) g = x } }",
    ],
    # Each declaration first or after another, on the line of the '{' or below it: the
    # parser states differ by the depth of their stacks.
    "the arguments of a stem, stage, transition or head are keywords: conv(out=32)": [
        f"model A {{{before}{decl}(32) }}"
        for before in (" ", "\n", " head none; ", "\nhead none\n")
        for decl in ("stem conv", "stage Net", "down conv", "up conv", "head classifier")
    ],
    "an expression is missing an operand": [
        "network A { update { x+ = x - } }",
        "network A { update { x+ = x * } }",
        "network A { update { x+ = } }",
        "network A { param t = }",
    ],
}


def _grammar() -> str:
    grammar = Path(resource_path("grammars", "opt.lark")).read_text(encoding="utf-8")
    if sys.version_info < (3, 11):  # no possessive quantifiers before 3.11: the plain form
        grammar = grammar.replace(")*+/", ")*/")
    return grammar


def _build(grammar: str) -> Lark:
    return Lark(
        grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True, strict=True
    )


@functools.cache
def _parser() -> Lark:
    """The LALR parser, built once per process, and its tables once per grammar: building
    them (with the strict collision check) costs about 0.35 s of CPU, loading them 0.01 s.
    The tables are kept in optgen's private cache folder (`cache.private_folder`, checked
    as the modules' folder is), named by a digest of the grammar and the lark and Python
    versions; without a trusted folder, or with a file that does not load, optgen builds
    them as before."""
    grammar = _grammar()
    key = "\0".join([grammar, lark.__version__, sys.version])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
    folder = cache.private_folder("parser")
    path = folder / f"opt-{digest}.lark" if folder is not None else None
    if path is not None:
        try:
            with open(path, "rb") as handle:
                return Lark.load(handle)
        except Exception:  # noqa: BLE001 - missing, truncated or foreign: rebuilt below
            pass
    parser = _build(grammar)
    if path is not None:
        buffer = io.BytesIO()
        parser.save(buffer)
        try:
            cache.write_private_file(path, buffer.getvalue())
        except OSError:  # a full disk or a read-only cache: the next process builds again
            pass
    return parser


def _span(meta) -> Span:
    return Span.of(meta)


def _tok(token: Token) -> ast.Ident:
    return ast.Ident(str(token), Span.of(token))


class TooDeep(Exception):
    """Raised inside the transformer (lark wraps it in a VisitError) at MAX_NESTING."""

    def __init__(self, span: Span):
        super().__init__(span)
        self.span = span


class _ToAst(Transformer_NonRecursive):
    """Builds AST nodes only; meaning is checked later (lark wraps callback errors).

    Non-recursive: a sum of 10,000 terms is a tree 10,000 deep. `_depth` keeps, for each
    expression built, how deeply calls, indexes and history sums nest in it."""

    def __init__(self, text: str):
        super().__init__()
        self._text = text
        self._depth: dict[int, int] = {}

    def _nested(self, node, children, span: Span):
        """`node`, one level deeper than the deepest of its sub-expressions."""
        depth = 1 + max((self._depth.get(id(c), 0) for c in children), default=0)
        if depth > MAX_NESTING:
            raise TooDeep(span)
        self._depth[id(node)] = depth
        return node

    def _flat(self, node, children):
        """`node` (a sum, product or sign), as deep as its deepest operand."""
        self._depth[id(node)] = max((self._depth.get(id(c), 0) for c in children), default=0)
        return node

    def _slice(self, meta) -> str:
        return self._text[meta.start_pos : meta.end_pos]

    # expressions
    @v_args(inline=True)
    def number(self, tok):
        return ast.Number(str(tok), Span.of(tok))

    @v_args(inline=True)
    def name(self, tok):
        return ast.Name(str(tok), Span.of(tok))

    @v_args(inline=True)
    def next_name(self, tok):
        return ast.NextName(str(tok)[:-1], Span.of(tok))

    @v_args(inline=True)
    def prev_name(self, tok):
        return ast.PrevName(str(tok)[:-1], Span.of(tok))

    @v_args(meta=True)
    def indexed(self, meta, children):
        tok, index = children
        return self._nested(ast.Indexed(str(tok), index, _span(meta)), [index], _span(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        tok, args = children
        node = ast.Call(str(tok), tuple(args or ()), _span(meta), Span.of(tok))
        return self._nested(node, args or (), _span(meta))

    @v_args(meta=True)
    def adjoint_call(self, meta, children):
        tok, _adjoint, args = children
        node = ast.Call(str(tok), tuple(args or ()), _span(meta), Span.of(tok), adjoint=True)
        return self._nested(node, args or (), _span(meta))

    def arguments(self, children):
        return list(children)

    @v_args(meta=True)
    def history_sum(self, meta, children):
        func, var, lo, _range, hi, body = children
        node = ast.HistorySum(str(func), str(var), lo, hi, body, _span(meta))
        return self._nested(node, (lo, hi, body), _span(meta))

    def _binary(op):
        @v_args(meta=True)
        def build(self, meta, children):
            left, right = children
            return self._flat(ast.Binary(op, left, right, _span(meta)), children)

        return build

    add = _binary("+")
    sub = _binary("-")
    mul = _binary("*")
    div = _binary("/")
    mod = _binary("%")
    pow = _binary("^")

    @v_args(meta=True)
    def neg(self, meta, children):
        return self._flat(ast.Neg(children[0], _span(meta)), children)

    # declarations
    @v_args(meta=True)
    def state_decl(self, meta, children):
        names = tuple(name for name, _ in children)
        sizes = tuple(size for _, size in children)
        return ast.StateDecl(names, _span(meta), sizes)

    def state_name(self, children):
        name, size = children
        return _tok(name), _tok(size) if size is not None else None

    @v_args(meta=True)
    def init_assign(self, meta, children):
        target, value = children
        return ast.InitAssign(_tok(target), value, _span(meta))

    @v_args(meta=True)
    def init_decl(self, meta, children):
        return ast.InitDecl(tuple(children), _span(meta))

    @v_args(meta=True)
    def interval(self, meta, children):
        open_, lo, hi, close = children
        return ast.Interval(lo, hi, open_ == "[", close == "]", _span(meta))

    def bound_open(self, children):
        return str(children[0])

    bound_close = bound_open

    @v_args(meta=True)
    def param_decl(self, meta, children):
        name, index, value, *options = children
        return ast.ParamDecl(
            name=_tok(name),
            index=index,
            value=value,
            options=tuple(
                ast.ParamFlag(str(o), Span.of(o)) if isinstance(o, Token) else o for o in options
            ),
            span=_span(meta),
        )

    @v_args(meta=True)
    def positional_arg(self, meta, children):
        tok = children[0]
        return ast.BlockArg(None, ast.StringLit(str(tok)[1:-1], Span.of(tok)), _span(meta))

    @v_args(meta=True)
    def keyword_arg(self, meta, children):
        key, value = children
        if isinstance(value, Token):  # a STRING
            value = ast.StringLit(str(value)[1:-1], Span.of(value))
        return ast.BlockArg(_tok(key), value, _span(meta))

    def block_args(self, children):
        return list(children)

    @v_args(meta=True)
    def block_decl(self, meta, children):
        name, kind, args, shared = children
        return ast.BlockDecl(
            _tok(name), _tok(kind), tuple(args or ()), shared is not None, _span(meta)
        )

    @v_args(meta=True)
    def layers_decl(self, meta, children):
        tok = children[0]
        if tok.type == "EQUILIBRIUM":
            return ast.LayersDecl(None, True, _span(meta))
        return ast.LayersDecl(int(str(tok)), False, _span(meta))

    @v_args(meta=True)
    def statement(self, meta, children):
        target, value = children
        return ast.Statement(target, value, _span(meta), self._slice(meta))

    @v_args(meta=True)
    def update_decl(self, meta, children):
        return ast.UpdateDecl(tuple(children), _span(meta))

    @v_args(meta=True)
    def output_decl(self, meta, children):
        return ast.OutputDecl(_tok(children[0]), _span(meta))

    @v_args(meta=True)
    def option(self, meta, children):
        key, value = children
        return ast.Option(_tok(key), value, _span(meta))

    def options(self, children):
        return list(children)

    @v_args(meta=True)
    def solver_decl(self, meta, children):
        name, options = children
        return ast.SolverDecl("solver", _tok(name), tuple(options or ()), _span(meta))

    @v_args(meta=True)
    def backward_decl(self, meta, children):
        name, options = children
        return ast.SolverDecl("backward", _tok(name), tuple(options or ()), _span(meta))

    @v_args(meta=True)
    def checkpoint_decl(self, meta, children):
        return ast.CheckpointDecl(children[0], _span(meta))

    @v_args(meta=True)
    def network(self, meta, children):
        name, *decls = children
        return ast.Network(_tok(name), tuple(decls), _span(meta), self._slice(meta))

    # models
    @v_args(meta=True)
    def input_decl(self, meta, children):
        return ast.InputDecl(tuple(children[0] or ()), _span(meta))

    @v_args(meta=True)
    def stem_decl(self, meta, children):
        kind, options = children
        return ast.StemDecl(_tok(kind), tuple(options or ()), _span(meta))

    @v_args(meta=True)
    def stage_decl(self, meta, children):
        network, options = children
        return ast.StageDecl(_tok(network), tuple(options or ()), _span(meta))

    @v_args(meta=True)
    def transition_decl(self, meta, children):
        if len(children) == 2:  # norm [carry]
            word, carry = children
            kind, options = None, None
        else:
            word, kind, options, carry = children
        return ast.TransitionDecl(
            _tok(word),
            None if kind is None else _tok(kind),
            tuple(options or ()),
            carry,
            _span(meta),
        )

    @v_args(inline=True)
    def carry(self, word):
        return _tok(word)

    @v_args(meta=True)
    def head_decl(self, meta, children):
        kind, *rest = children
        options = rest[0] if rest else None
        return ast.HeadDecl(_tok(kind), tuple(options or ()), _span(meta))

    @v_args(meta=True)
    def model(self, meta, children):
        name, *decls = children
        return ast.Model(_tok(name), tuple(decls), _span(meta), self._slice(meta))

    def start(self, children):
        return ast.Module(
            tuple(c for c in children if isinstance(c, ast.Network)),
            tuple(c for c in children if isinstance(c, ast.Model)),
        )


def _describe_expected(expected: set[str]) -> str:
    names = sorted({EXPECTED_NAMES.get(e, _literal_name(e)) for e in expected})
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _literal_name(terminal: str) -> str:
    term = _parser().get_terminal(terminal) if terminal in _terminal_names() else None
    if term is not None and term.pattern.type == "str":
        return repr(term.pattern.value)
    return terminal.lower()


@functools.cache
def _terminal_names() -> frozenset[str]:
    return frozenset(t.name for t in _parser().terminals)


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    if token.type == "_SEP":
        return "end of line" if "\n" in str(token) else "';'"
    return repr(str(token))


def _syntax_diagnostic(err: UnexpectedInput, source: SourceFile) -> Diagnostic:
    label = None
    try:
        label = err.match_examples(_parser().parse, SYNTAX_EXAMPLES, use_accepts=True)
    except Exception:  # match_examples is a heuristic; never let it hide the real error
        label = None
    if isinstance(err, UnexpectedCharacters):
        char = source.text[err.pos_in_stream] if err.pos_in_stream < len(source.text) else ""
        span = Span.point(err.line, err.column)
        hint = _adjoint_hint(source.text, err.pos_in_stream) or _chars_hint(char)
        return Diagnostic(Severity.ERROR, span, f"unexpected character {char!r}", hint)
    if isinstance(err, UnexpectedEOF) or (
        isinstance(err, UnexpectedToken) and err.token.type == "$END"
    ):
        expected = getattr(err, "expected", set()) or set()
        span = source.end_span()
        message = "unexpected end of file"
        if expected:
            message += f", expected {_describe_expected(set(expected))}"
        return Diagnostic(Severity.ERROR, span, message, label or _eof_hint(source))
    assert isinstance(err, UnexpectedToken)
    token = err.token
    span = Span.of(token)
    if token.type == "_SEP":
        span = Span.point(token.line, token.column)
    expected = set(err.accepts or err.expected)
    message = f"unexpected {_token_text(token)}, expected {_describe_expected(expected)}"
    if label is None and token.type == "_SEP" and "\n" in str(token):
        # A statement broken over lines, as a Python user would inside parentheses.
        label = "a statement ends at the end of its line: continue it with \\ at the end"
    return Diagnostic(Severity.ERROR, span, message, label)


def _adjoint_hint(text: str, pos: int) -> str | None:
    """`K'(y)`, `K.T(y)`: the adjoint spellings of other languages."""
    found = re.compile(r"([A-Za-z_]\w*)(?:'|\.T)\(").match(text, _name_start(text, pos))
    if found is None:
        return None
    return f"the adjoint of an operator block is written {found.group(1)}^T(...)"


def _name_start(text: str, pos: int) -> int:
    while pos > 0 and (text[pos - 1].isalnum() or text[pos - 1] == "_"):
        pos -= 1
    return pos


def _chars_hint(char: str) -> str | None:
    if char in "^":
        return "powers are not part of the language; write the product out (b*b)"
    if char == "'":
        return 'strings use double quotes: "pkg.module:Class"'
    return None


def _eof_hint(source: SourceFile) -> str | None:
    if source.text.count("{") > source.text.count("}"):
        return "a '{' is not closed by a matching '}'"
    if source.text.count("(") > source.text.count(")"):
        return "a '(' is not closed by a matching ')'"
    return None


def _position(text: str, pos: int) -> Span:
    """The span of the character at offset `pos` (lines counted at '\\n', as lark does)."""
    line = text.count("\n", 0, pos) + 1
    return Span.point(line, pos - (text.rfind("\n", 0, pos) + 1) + 1)


def check_size(source: SourceFile) -> None:
    """Refuse, before parsing, a text whose significant characters exceed the limit: the
    scan is one regex pass, so a 10 MB text is refused in a fraction of a second."""
    total = 0
    for chunk in _SIGNIFICANT.finditer(source.text):
        if source.text[chunk.start()] == "#":
            continue
        total += chunk.end() - chunk.start()
        if total > MAX_SIGNIFICANT_CHARS:
            at = _position(source.text, chunk.end() - (total - MAX_SIGNIFICANT_CHARS))
            message = f"the file is too large: over {MAX_SIGNIFICANT_CHARS:,} characters of code"
            hint = "split it into several .opt files (comments and blank lines do not count)"
            raise OptgenError([Diagnostic(Severity.ERROR, at, message, hint)], source)


def parse(source: SourceFile) -> ast.Module:
    """Parse a whole `.opt` text into its AST, or raise `OptgenError` at the first syntax error."""
    check_size(source)
    try:
        tree = _parser().parse(source.text)
    except UnexpectedInput as err:
        raise OptgenError([_syntax_diagnostic(err, source)], source) from None
    try:
        return _ToAst(source.text).transform(tree)
    except VisitError as err:
        if not isinstance(err.orig_exc, TooDeep):
            raise
        message = f"calls, indexes and sums nest more than {MAX_NESTING} deep here"
        hint = "name the inner values as locals of the update (g = T(x))"
        diagnostic = Diagnostic(Severity.ERROR, err.orig_exc.span, message, hint)
        raise OptgenError([diagnostic], source) from None
