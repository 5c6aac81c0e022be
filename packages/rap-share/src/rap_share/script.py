"""Reading a TorchArrow-like preprocessing script into statements, one per line.

The format (RAP's "PRE.py")::

    # dense features
    df["int_0"] = df["int_0"].fill_null(0)
    df["int_0"] = functional.logit(df["int_0"], 1e-5)
    df["cat_0"] = functional.sigrid_hash(df["cat_0"], 0, 1460)
    df["b_0"] = functional.bucketize(df["int_0"], [0.5, 1.0, 1.5])
    df["cat_0"] = functional.firstx(df["cat_0"], x=1)

One assignment per line (a bracketed argument list may span lines), ``#`` comments, blank
lines and ``import``/``from`` lines are allowed; arguments are numbers or lists of numbers,
positional or by keyword. A bad line raises :class:`~rap_share.errors.ScriptError` naming it.

>>> [s.op for s in parse('df["a"] = functional.ngram(df["a"], 2)  # pairs')]
['ngram']
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path

from rap_share import ops as _ops
from rap_share.errors import OpError, ScriptError


@dataclass(frozen=True)
class Statement:
    line: int
    out: str
    op: str
    input: str
    params: dict = field(default_factory=dict)
    text: str = ""


def parse_file(path: str | os.PathLike) -> list[Statement]:
    p = Path(path)
    if not p.is_file():
        raise ScriptError(0, "no such file", str(p))
    return parse(p.read_text(encoding="utf-8"), source=str(p))


def parse(text: str, source: str = "<script>") -> list[Statement]:
    """Statements in order; a syntax or format error names the line."""
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as err:
        line = err.lineno or 0
        shown = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
        raise ScriptError(line, f"syntax error: {err.msg}", source, shown) from None
    lines = text.splitlines()
    out = []
    for node in tree.body:
        src = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        out.append(_statement(node, source, src))
    if not out:
        raise ScriptError(0, "no preprocessing statements found", source)
    return out


def _fail(node, source, src, msg):
    raise ScriptError(node.lineno, msg, source, src)


def _column(node, source, src, what) -> str:
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "df"
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    ):
        return node.slice.value
    _fail(node, source, src, f'{what} must be a column like df["name"], got {ast.unparse(node)!r}')
    raise AssertionError


def _literal(node, source, src):
    try:
        value = ast.literal_eval(node)
    except ValueError:
        _fail(
            node,
            source,
            src,
            f"argument {ast.unparse(node)!r} is not a number or a list of numbers",
        )
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if ok(value) or (isinstance(value, (list, tuple)) and all(ok(v) for v in value)):
        return list(value) if isinstance(value, tuple) else value
    _fail(node, source, src, f"argument {ast.unparse(node)!r} is not a number or a list of numbers")
    raise AssertionError


def _statement(node, source, src) -> Statement:
    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
        _fail(
            node, source, src, 'expected one assignment: df["out"] = functional.op(df["in"], ...)'
        )
    out = _column(node.targets[0], source, src, "the assignment target")
    call = node.value
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
        _fail(
            node,
            source,
            src,
            'the right side must be functional.op(df["in"], ...) or df["in"].op(...)',
        )
    func = call.func
    args = list(call.args)
    if isinstance(func.value, ast.Name) and func.value.id == "functional":
        if not args:
            _fail(node, source, src, f"functional.{func.attr} needs the input column first")
        inp = _column(args.pop(0), source, src, "the first argument")
    elif isinstance(func.value, ast.Subscript):
        inp = _column(func.value, source, src, "the method's object")
    else:
        _fail(
            node,
            source,
            src,
            f"unknown call {ast.unparse(func)!r}; expected functional.<op> or df[...].<op>",
        )
    op = func.attr
    if op not in _ops.OPS:
        _fail(node, source, src, f"unknown op {op!r}; known ops: {', '.join(_ops.OP_NAMES)}")
    pos = [_literal(a, source, src) for a in args]
    kw = {}
    for k in call.keywords:
        if k.arg is None:
            _fail(node, source, src, "**kwargs are not supported")
        kw[k.arg] = _literal(k.value, source, src)
    try:
        params = _ops.normalize(op, out, pos, kw)
    except OpError as err:
        raise ScriptError(node.lineno, str(err), source, src) from None
    return Statement(node.lineno, out, op, inp, params, src.strip())


def render(statements: list[Statement]) -> str:
    """Statements back to script text (parse(render(s)) == s up to line numbers)."""
    lines = []
    for s in statements:
        args = ", ".join(repr(v) for v in s.params.values())
        lines.append(
            f'df["{s.out}"] = functional.{s.op}(df["{s.input}"]{", " + args if args else ""})'
        )
    return "\n".join(lines) + "\n"
