#!/usr/bin/env python3
"""Writes pushpop's sync modules from their asyncio sources, which are the ones written by hand.

    python tools/async_to_sync.py           # rewrite the sync modules
    python tools/async_to_sync.py --check   # exit 1 if one is stale (``make lint`` runs this)

Each sync module is its source's syntax tree with these rules applied, then unparsed, its
imports sorted and pruned and the whole formatted by ruff:

- ``async def``, ``async with`` and ``async for`` lose ``async``; ``await x`` becomes ``x``;
- a name ``AsyncX`` becomes ``X`` (in a forward reference, ``"AsyncX"``, too); ``__aenter__``
  and ``__aexit__`` become ``__enter__`` and ``__exit__``;
- relative imports of the modules in ``MODULES`` import their twins (``.tasks``, asyncio's
  helpers, becomes ``.threads``);
- ``asyncio.to_thread(f, *args)`` becomes ``f(*args)``, ``asyncio.shield(x)`` becomes ``x``,
  ``Awaitable[X]`` becomes ``X``;
- ``ASYNC`` is false: ``if ASYNC: A else: B`` becomes ``B`` (as does ``if ASYNC and x``, and
  ``if not ASYNC: B``), ``X if ASYNC else Y`` becomes ``Y``; the flag's own line goes;
- in docstrings ``AsyncX`` becomes ``X`` too, and ``await``, ``async with`` and ``async for``
  lose their ``await``/``async`` (other strings are data: where they differ, ``if ASYNC`` says so).

Comments do not survive (the syntax tree has none): the source is the one to read. Run it with
the project's Python (``make lint`` does): another version may unparse some code differently.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Source (asyncio) -> twin (sync), relative to the repository.
PAIRS = {
    "pushpop/async_client.py": "pushpop/client.py",
    "pushpop/async_worker.py": "pushpop/worker.py",
}
# Modules of the package swapped for their sync twins in relative imports.
MODULES = {"async_client": "client", "async_worker": "worker", "tasks": "threads"}
NAMES = {"__aenter__": "__enter__", "__aexit__": "__exit__"}
FLAG = "ASYNC"
LINE_LENGTH = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"]

_ASYNC_NAME = re.compile(r"^Async(?=[A-Z])")
_TEXT = [
    (re.compile(r"\bAsync(?=[A-Z])"), ""),
    (re.compile(r"\bawait\s+"), ""),
    (re.compile(r"\basync\s+(?=(with|for|def)\b)"), ""),
]


def rename(name: str) -> str:
    """The sync twin of a name."""
    return NAMES.get(name) or _ASYNC_NAME.sub("", name)


def retext(text: str) -> str:
    """The sync twin of a docstring's text."""
    for pattern, replacement in _TEXT:
        text = pattern.sub(replacement, text)
    return text


def _in_sync(test: ast.expr) -> bool | None:
    """What a condition on ``ASYNC`` is in the sync twin (``ASYNC`` is false there, so ``ASYNC
    and x`` is too); None for a condition that does not depend on it alone."""
    if isinstance(test, ast.Name) and test.id == FLAG:
        return False
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _in_sync(test.operand)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        known = [_in_sync(value) for value in test.values]
        decisive = isinstance(test.op, ast.Or)  # True decides an `or`, False an `and`
        if decisive in known:
            return decisive
    return None


def _is_call_to(node: ast.expr, module: str, attr: str) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    return (
        isinstance(func, ast.Attribute)
        and func.attr == attr
        and isinstance(func.value, ast.Name)
        and func.value.id == module
    )


def _retext_docstring(node: ast.Module | ast.ClassDef | ast.FunctionDef) -> None:
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        first.value.value = retext(first.value.value)


class AsyncToSync(ast.NodeTransformer):
    """The rules of the module docstring, one visit per kind of node."""

    def _twin(self, node: ast.AST) -> ast.AST:
        twin: ast.AST = self.visit(node)
        return twin

    def visit_Module(self, node: ast.Module) -> ast.AST:
        _retext_docstring(node)
        return self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        sync = ast.FunctionDef(**{f: getattr(node, f) for f in node._fields})
        return ast.copy_location(self.visit_FunctionDef(sync), node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = rename(node.name)
        _retext_docstring(node)
        return self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = rename(node.name)
        _retext_docstring(node)
        return self.generic_visit(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        sync = ast.With(**{f: getattr(node, f) for f in node._fields})
        return ast.copy_location(self.generic_visit(sync), node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        sync = ast.For(**{f: getattr(node, f) for f in node._fields})
        return ast.copy_location(self.generic_visit(sync), node)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self._twin(node.value)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if _is_call_to(node, "asyncio", "to_thread"):
            func, *args = node.args
            node = ast.Call(func=func, args=args, keywords=node.keywords)
        elif _is_call_to(node, "asyncio", "shield"):
            return self._twin(node.args[0])
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id == "Awaitable":
            return self._twin(node.slice)
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> ast.AST | list[ast.stmt]:
        truth = _in_sync(node.test)
        if truth is None:
            return self.generic_visit(node)
        kept: list[ast.stmt] = []
        for stmt in node.body if truth else node.orelse:
            twin = self.visit(stmt)  # None, a statement, or (an `if ASYNC` in it) a list
            kept += [] if twin is None else twin if isinstance(twin, list) else [twin]
        return kept

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        truth = _in_sync(node.test)
        if truth is None:
            return self.generic_visit(node)
        return self._twin(node.body if truth else node.orelse)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        if isinstance(node.target, ast.Name) and node.target.id == FLAG:
            return None
        return self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        if any(isinstance(t, ast.Name) and t.id == FLAG for t in node.targets):
            return None
        return self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level and node.module in MODULES:
            node.module = MODULES[node.module]
        for alias in node.names:
            alias.name = rename(alias.name)
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = rename(node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        node.attr = rename(node.attr)
        return self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = rename(node.arg)
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, str) and node.value.isidentifier():  # a forward reference
            node.value = rename(node.value)
        return node


def header(source: str, code: str) -> str:
    """The lines a generated module begins with."""
    lines = [f"# generated from {source} by tools/async_to_sync.py: do not edit\n"]
    if any(len(line) > LINE_LENGTH for line in code.splitlines()):
        lines += [
            "# Strings the source splits over lines come out whole here, hence:\n",
            "# ruff: noqa: E501\n",
        ]
    return "".join(lines)


def ruff(args: list[str], code: str, path: str) -> str:
    """``code`` passed through ``ruff ARGS``, as the repository configures it."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", path, "-"],
        input=code, capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"async_to_sync: ruff {' '.join(args)} failed on {path}:\n{done.stderr}")
    return done.stdout


def convert(source: str, target: str) -> str:
    """The text of ``target``, written from ``source`` (both relative to the repository)."""
    return twin(source, (ROOT / source).read_text(encoding="utf-8"), target)


def twin(source: str, code: str, target: str) -> str:
    """The sync twin of ``code``, the text of ``source``, as ``target`` holds it."""
    tree = ast.parse(code, filename=source)
    tree = ast.fix_missing_locations(AsyncToSync().visit(tree))
    code = ruff(["check", "--fix", "--quiet", "--select", "I,F401"], ast.unparse(tree), target)
    code = ruff(["format", "--quiet"], code, target)
    return header(source, code) + code


def main(argv: list[str] | None = None) -> int:
    """Writes every twin, or with ``--check`` reports the stale ones; 1 if any is."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    stale = []
    for source, target in PAIRS.items():
        wanted = convert(source, target)
        path = ROOT / target
        if path.exists() and path.read_text(encoding="utf-8") == wanted:
            continue
        stale.append(target)
        if not args.check:
            path.write_text(wanted, encoding="utf-8")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run python tools/async_to_sync.py", file=sys.stderr)
        return 1
    for target in stale:
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
