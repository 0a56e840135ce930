"""A restricted environment for the Python that BPMN definitions carry.

Conditions, expressions and script tasks run through SpiffWorkflow's ``PythonScriptEngine``,
which is plain ``eval``/``exec``. This module narrows it in three layers:

1. ``check_source`` - a static AST check, run at upload and again before every evaluation:
   no imports, no ``_``-names or ``_``-attributes (``__class__``, ``__globals__``...), no
   frame/generator/code attributes, no ``.format``/``.format_map`` (format fields can read
   attributes), no dangerous builtins by name, no ``try`` (it could swallow the timeout), no
   classes, ``global``, ``async`` or ``yield``, and no constant bombs such as ``10**10**10``.
2. ``SAFE_BUILTINS`` - the only builtins a script sees; ``range`` is capped.
3. A wall-time limit per evaluation enforced with ``sys.settrace``: Python-level loops and
   comprehensions raise ``ScriptTimeout``. CPython emits no trace event for a jump to itself
   (``while True: pass``), so the check also rejects such empty loops in the bytecode.

What this cannot stop (see docs/adr/0003-script-safety.md): one long C-level call inside an
allowed builtin or operator emits no trace events, so ``x ** y``, ``s * n`` or
``sorted(big)`` with sizes taken from task data can still burn CPU or memory until it ends.
``eval`` in-process is not a security boundary; definitions are admin-only uploads.
"""

from __future__ import annotations

import ast
import builtins
import dis
import operator
import sys
import time
from datetime import date, datetime, timedelta
from functools import lru_cache
from types import CodeType
from typing import Any
from uuid import UUID

from isodate import duration_isoformat
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment
from SpiffWorkflow.exceptions import SpiffWorkflowException

from application.text import utf8_encodable
from application.transcoder import RESERVED_KEY, RESERVED_KEY_PROBLEM
from domain.errors import Problem, ScriptRejected, WorkflowError

MAX_RANGE = 100_000  # items a script's range() may produce
MAX_POWER = 10_000  # largest constant exponent or shift
MAX_SEQUENCE = 1_000_000  # longest constant sequence a repeat may build
MAX_CONSTANT_BITS = 100_000  # largest integer constant folded while checking

DANGEROUS_NAMES = frozenset(
    "eval exec open compile getattr setattr delattr hasattr globals locals vars dir type "
    "input breakpoint help memoryview object super classmethod staticmethod property "
    "exit quit".split()
)
# ``script_engine`` and ``environment`` lead from any engine object to an evaluator: nothing in
# task data is one (application/engine/serializer.py), and no script needs to reach one.
_FORBIDDEN_ATTRIBUTES = frozenset({"format", "format_map", "mro", "script_engine", "environment"})
_FORBIDDEN_PREFIXES = ("_", "gi_", "cr_", "ag_", "f_", "tb_", "co_")
_FORBIDDEN_NODES = {
    ast.Import: "import is not allowed",
    ast.ImportFrom: "import is not allowed",
    ast.Global: "'global' is not allowed",
    ast.Nonlocal: "'nonlocal' is not allowed",
    ast.ClassDef: "class definitions are not allowed",
    ast.AsyncFunctionDef: "async functions are not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
    ast.Try: "'try' is not allowed (it could swallow the time limit)",
    ast.TryStar: "'try' is not allowed (it could swallow the time limit)",
    # Match patterns name attributes as plain strings (``case str(__class__=c)``), out of
    # reach of the attribute check: no workflow needs them.
    ast.Match: "'match' is not allowed",
    # A suspended generator finalised by the garbage collector swallows the time limit's
    # exception, and CPython then switches the limit off for the rest of the script.
    ast.GeneratorExp: "generator expressions are not allowed (use a list comprehension: [x for x in ...])",
}
_INT_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
}


class ScriptTimeout(Exception):
    """A script or expression ran longer than its wall-time limit."""


def _capped_range(*args: int) -> range:
    items = range(*args)
    try:
        too_long = len(items) > MAX_RANGE
    except OverflowError:
        too_long = True
    if too_long:
        raise ValueError(f"range() is limited to {MAX_RANGE} items")
    return items


def _internal_import(name: str, globals_: object = None, locals_: object = None, fromlist: object = (),
                     level: int = 0) -> object:
    """What C code of the allowed types imports behind a script's back: ``strftime`` and
    ``date.today`` load ``time``, ``strptime`` loads ``_strptime``. Scripts cannot name it
    (names starting with ``_`` are refused), and nothing else can be imported through it."""
    if level or name not in ("time", "_strptime"):
        raise ImportError(f"scripts cannot import {name!r}")
    return builtins.__import__(name, globals_, locals_, fromlist, level)


# ``map`` and ``filter`` call a function for each item in a C loop the time limit never
# sees: given a C function that grows the list they walk (``any(map(items.append, items))``)
# they run until memory runs out. Here each item is a Python step, which the limit stops.
class _Map:
    def __init__(self, function: Any, *iterables: Any) -> None:
        self._items = builtins.map(function, *iterables)

    def __iter__(self) -> _Map:
        return self

    def __next__(self) -> Any:
        return next(self._items)


class _Filter:
    def __init__(self, function: Any, iterable: Any) -> None:
        self._keep = bool if function is None else function
        self._items = iter(iterable)

    def __iter__(self) -> _Filter:
        return self

    def __next__(self) -> Any:
        while True:
            item = next(self._items)
            if self._keep(item):
                return item


SAFE_BUILTINS: dict[str, object] = {
    **{name: getattr(builtins, name) for name in (
        "abs all any bool dict divmod enumerate float int isinstance len list "
        "max min reversed round set sorted str sum tuple zip".split()
    )},
    "map": _Map, "filter": _Filter,
    "range": _capped_range,
    "True": True, "False": False, "None": None,
    "date": date, "datetime": datetime, "timedelta": timedelta,
    "__import__": _internal_import,
}


def check_source(source: str, *, mode: str) -> list[str]:
    """Return why ``source`` may not run (``mode`` "eval" or "exec"); empty means allowed."""
    return [f"line {line}: {message}" for line, message in _violations(source, mode)]


@lru_cache(maxsize=2048)
def _violations(source: str, mode: str) -> tuple[tuple[int, str], ...]:
    try:
        tree = ast.parse(source, mode=mode)
        code = compile(tree, "<string>", mode)  # some syntax errors ('return' outside def) show here
    except SyntaxError as err:
        return ((err.lineno or 1, f"syntax error: {err.msg}"),)
    except (RecursionError, MemoryError):  # the parser gives up on absurd nesting
        return ((1, "expression is nested too deeply"),)
    found: dict[tuple[int, str], None] = {}  # ordered and de-duplicated
    for node in ast.walk(tree):
        for message in _node_violations(node):
            found[(getattr(node, "lineno", 1), message)] = None
    for line in _untraceable_loops(code):
        found[(line, "a loop that does nothing cannot be interrupted by the time limit")] = None
    return tuple(found)


def _untraceable_loops(code: CodeType):
    """Lines of jumps to themselves (``while True: pass``): CPython emits no trace event there."""
    for instruction in dis.get_instructions(code):
        if "JUMP" in instruction.opname and instruction.argval == instruction.offset:
            yield instruction.positions.lineno or 1
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _untraceable_loops(constant)


def _node_violations(node: ast.AST):
    if type(node) in _FORBIDDEN_NODES:
        yield _FORBIDDEN_NODES[type(node)]
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            yield f"name '{node.id}' is not allowed (names may not start with '_')"
        elif node.id in DANGEROUS_NAMES:
            yield f"'{node.id}' is not available in scripts"
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith(_FORBIDDEN_PREFIXES) or node.attr in _FORBIDDEN_ATTRIBUTES:
            yield f"attribute '.{node.attr}' is not allowed"
    elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            yield f"name '{node.name}' is not allowed (names may not start with '_')"
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.arg.startswith("_"):
                yield f"name '{arg.arg}' is not allowed (names may not start with '_')"
    elif isinstance(node, ast.keyword) and node.arg and node.arg.startswith("_"):
        yield f"keyword '{node.arg}' is not allowed (names may not start with '_')"
    elif isinstance(node, ast.BinOp):
        yield from _bomb_violations(node)


def _bomb_violations(node: ast.BinOp):
    try:
        right = _constant_int(node.right)
        _constant_int(node)
        length = _constant_length(node)
    except OverflowError as err:
        yield str(err)
        return
    if isinstance(node.op, (ast.Pow, ast.LShift)) and right is not None and right > MAX_POWER:
        yield f"constant exponent or shift {right} is larger than {MAX_POWER}"
    if length is not None and length > MAX_SEQUENCE:
        yield f"repeats a sequence to {length} items, limit {MAX_SEQUENCE}"


def _constant_int(node: ast.AST) -> int | None:
    """The value of a constant integer expression, or None; OverflowError when it is a bomb."""
    if isinstance(node, ast.Constant):
        return node.value if type(node.value) is int else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _constant_int(node.operand)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if not (isinstance(node, ast.BinOp) and type(node.op) in _INT_OPS):
        return None
    left, right = _constant_int(node.left), _constant_int(node.right)
    if left is None or right is None:
        return None
    if isinstance(node.op, (ast.Pow, ast.LShift)) and right > 0:
        if right > MAX_POWER or abs(left).bit_length() * right > MAX_CONSTANT_BITS:
            symbol = "**" if isinstance(node.op, ast.Pow) else "<<"
            raise OverflowError(f"constant {left} {symbol} {right} is too large to compute")
    try:
        return _INT_OPS[type(node.op)](left, right)
    except (ArithmeticError, ValueError):
        return None


def _constant_length(node: ast.AST) -> int | None:
    """Length of a sequence built from literals and constant repeats, or None if unknown."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return len(node.value)
    if isinstance(node, (ast.List, ast.Tuple)):
        return len(node.elts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        for sequence, count in ((node.left, node.right), (node.right, node.left)):
            length, times = _constant_length(sequence), _constant_int(count)
            if length is not None and times is not None:
                return length * max(times, 0)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _constant_length(node.left), _constant_length(node.right)
        if left is not None and right is not None:
            return left + right
    return None


@lru_cache(maxsize=2048)
def _compiled(source: str, mode: str):
    violations = _violations(source, mode)
    if violations:
        reasons = "; ".join(f"line {line}: {message}" for line, message in violations)
        raise ScriptRejected(
            f"script not allowed: {reasons}",
            [Problem(path="<script>", message=message, line=line) for line, message in violations],
        )
    return compile(source, "<string>", mode)  # SpiffWorkflow finds error lines by this name


class RestrictedEnvironment(TaskDataEnvironment):
    """``TaskDataEnvironment`` that checks, restricts and times every evaluation."""

    def __init__(self, environment_globals: dict | None = None, *, timeout: float = 1.0):
        super().__init__(environment_globals)
        self.timeout = timeout

    def evaluate(self, expression, context, external_context=None):
        code = _compiled(expression, "eval")
        namespace = {**self.globals, **(external_context or {}), **context}
        namespace["__builtins__"] = SAFE_BUILTINS  # last, so task data cannot replace it
        return self._run(eval, code, namespace)

    def execute(self, script, context, external_context=None):
        self.check_for_overwrite(context, external_context or {})
        code = _compiled(script, "exec")
        context.update(self.globals)
        context.update(external_context or {})
        context["__builtins__"] = SAFE_BUILTINS
        try:
            self._run(exec, code, context)
        finally:
            self._remove_globals_and_functions_from_context(context, external_context)
        for name, value in list(context.items()):
            context[name] = storable(value, name)
        return True

    def _run(self, run, code, namespace):
        deadline = time.monotonic() + self.timeout

        def tracer(frame, event, arg):
            if time.monotonic() > deadline:
                raise ScriptTimeout(f"script ran longer than {self.timeout:g} s")
            return tracer

        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            result = run(code, namespace)
        finally:
            sys.settrace(previous)
        if time.monotonic() > deadline:  # the limit was lost on the way (its exception swallowed)
            raise ScriptTimeout(f"script ran longer than {self.timeout:g} s")
        return result


MAX_DATA_DEPTH = 64


def lenient(value: object, depth: int = 0) -> object:
    """``value`` made storable whatever it holds, for the state of a step that failed: the
    engine stops where the error left it, with what the failing script wrote (a set, a
    date), and that state is kept for the record. Dates and durations become ISO 8601, other
    collections lists, anything else its ``repr``; UUIDs and datetimes stay (the store
    keeps them)."""
    if isinstance(value, str):
        return value if utf8_encodable(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, (bool, int, UUID, datetime)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if depth >= 2 * MAX_DATA_DEPTH:
        return repr(value)[:1000]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return duration_isoformat(value)
    if isinstance(value, dict):
        return {_lenient_key(key): lenient(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [lenient(item, depth + 1) for item in value]
    return repr(value)[:1000]


def _lenient_key(key: object) -> str:
    text = lenient(key) if isinstance(key, str) else str(key) if isinstance(key, (int, float, bool)) else repr(key)
    return f"_{text}" if text == RESERVED_KEY else text  # the store would read it as an encoded value


def storable(value: object, path: str, depth: int = 0) -> object:
    """``value`` as task data can be stored: JSON. Dates and times become ISO 8601 strings
    (``timedelta`` a duration, ``P14D``); a value JSON cannot hold (a set, a number that is
    not finite, a key that is not a string, anything else a script made) is the script's
    error, named with where it is, instead of a save that fails on every retry."""
    if isinstance(value, str):
        if not utf8_encodable(value):
            raise ValueError(f"task data {path} holds an unpaired surrogate: it cannot be stored as text")
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"task data {path} is {value!r}: only finite numbers can be stored")
        return value
    if depth >= MAX_DATA_DEPTH:
        raise ValueError(f"task data {path} is nested more than {MAX_DATA_DEPTH} levels deep")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return duration_isoformat(value)
    if isinstance(value, (list, tuple)):
        return [storable(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    if isinstance(value, dict):
        if RESERVED_KEY in value:
            raise ValueError(f"task data {path}: {RESERVED_KEY_PROBLEM}")
        stored = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"task data {path} has the key {key!r}: keys must be strings")
            stored[key] = storable(item, f"{path}.{key}", depth + 1)
        return stored
    raise ValueError(f"task data {path} is a {type(value).__name__}, which cannot be stored "
                     "(use lists, dicts, strings, numbers, true/false or null)")


class RestrictedScriptEngine(PythonScriptEngine):
    """Keeps the reason in the message: SpiffWorkflow's ``evaluate`` wraps any error in a
    ``WorkflowTaskException("Error evaluating expression ...")`` that drops its text, and its
    ``create_task_exec_exception`` fails on an error whose argument is not text."""

    def create_task_exec_exception(self, task, script, err):
        # SpiffWorkflow appends ``err.args[0]`` to a string: a KeyError(1) raised a TypeError
        # in its place. Any argument is made text first.
        if err.args and not isinstance(err.args[0], str):
            err.args = (repr(err.args[0]), *err.args[1:])
        return super().create_task_exec_exception(task, script, err)

    def evaluate(self, task, expression, external_context=None):
        try:
            return super().evaluate(task, expression, external_context)
        except WorkflowTaskException as err:
            cause = err.__context__
            if cause is not None and not isinstance(cause, SpiffWorkflowException):
                reason = cause.detail if isinstance(cause, WorkflowError) else str(cause)
                err.add_note(f"{type(cause).__name__}: {reason}")
            raise


def restricted_script_engine(timeout: float = 1.0) -> PythonScriptEngine:
    """A SpiffWorkflow script engine whose scripts run in ``RestrictedEnvironment``."""
    return RestrictedScriptEngine(environment=RestrictedEnvironment(timeout=timeout))
