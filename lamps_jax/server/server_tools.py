"""Server-side tools: Python functions the server runs itself when the model calls them.

A ``ServerTool`` is a function and its OpenAI schema: the name, the docstring's first paragraph as description, and
the JSON Schema of its parameters, which pydantic derives from the signature and checks the model's arguments
against before the call (a wrong argument is an error the model reads, like any tool error). A result that is not
text is written as JSON.

Built-ins: ``calculator`` (arithmetic: numbers, ``+ - * / // % **``, parentheses and a few functions of ``math``)
and ``clock`` (the current time in an IANA time zone). ``load_tools`` reads the ``--tools`` list: built-in names and
``module:attribute`` specs, where the attribute is a function, a ``ServerTool`` or a list of them.
"""

from __future__ import annotations

import ast
import datetime
import importlib
import inspect
import json
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import TypeAdapter, ValidationError, validate_call

MAX_EXPRESSION_CHARS = 1000
MAX_EXPONENT = 1000  # larger powers are refused rather than computed for minutes


@dataclass(frozen=True)
class ServerTool:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments object
    fn: Callable

    @classmethod
    def from_function(cls, fn: Callable, name: str | None = None) -> ServerTool:
        doc = inspect.getdoc(fn) or ""
        return cls(name or fn.__name__, doc.split("\n\n")[0].strip(), TypeAdapter(fn).json_schema(), validate_call(fn))

    def openai_tool(self) -> dict:
        """The tool as a request's ``tools`` entry, for the chat template."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}

    def __call__(self, **arguments):
        """Runs the tool (in the engine's API executor); its result as text (awaitable for an async function).
        Arguments that do not fit the signature raise a ``ValueError`` that says which, in a line."""
        with _readable_argument_errors():
            result = self.fn(**arguments)
        if inspect.isawaitable(result):
            return _as_text_when_done(result)
        return _as_text(result)


@contextmanager
def _readable_argument_errors() -> Iterator[None]:
    try:
        yield
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"invalid arguments: {problems}") from None


async def _as_text_when_done(result) -> str:
    with _readable_argument_errors():  # an async function's arguments are checked when it is awaited
        return _as_text(await result)


def _as_text(result: object) -> str:
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS = {
    name: getattr(math, name) for name in ("sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan", "floor", "ceil")
} | {"abs": abs, "round": round, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponents beyond {MAX_EXPONENT} are not computed")
        return _OPERATORS[type(node.op)](left, right)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    raise ValueError(f"not arithmetic: {ast.unparse(node)!r}")


def calculator(expression: str) -> str:
    """Evaluates an arithmetic expression, e.g. "(2 + 3) * 4 / 7" or "sqrt(2) * pi".

    Numbers, + - * / // % ** and parentheses, the constants pi and e, and the functions sqrt, exp, log, log10, log2,
    sin, cos, tan, floor, ceil, abs, round, min and max."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an arithmetic expression: {err.msg}") from None
    return str(_evaluate(tree.body))


def clock(timezone: str = "UTC") -> str:
    """The current date and time in an IANA time zone (e.g. "Europe/Paris"), as ISO 8601."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}") from None
    return datetime.datetime.now(zone).isoformat(timespec="seconds")


BUILTIN_TOOLS = {tool.name: tool for tool in map(ServerTool.from_function, (calculator, clock))}


def _load(spec: str) -> Iterable[ServerTool]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"tool {spec!r}: give a built-in ({', '.join(BUILTIN_TOOLS)}) or module:function")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"tool {spec!r} cannot be loaded: {err}") from None
    for item in value if isinstance(value, list | tuple) else [value]:
        if isinstance(item, ServerTool):
            yield item
        elif callable(item):
            yield ServerTool.from_function(item)
        else:
            raise ValueError(f"tool {spec!r}: {item!r} is neither a function nor a ServerTool")


def load_tools(specs: Iterable[str]) -> dict[str, ServerTool]:
    """The tools of ``--tools`` entries (built-in names or ``module:attribute``), by name; a name given twice is an
    error."""
    tools: dict[str, ServerTool] = {}
    for spec in specs:
        for tool in [BUILTIN_TOOLS[spec]] if spec in BUILTIN_TOOLS else _load(spec):
            if tool.name in tools:
                raise ValueError(f"two server tools are named {tool.name!r}")
            tools[tool.name] = tool
    return tools
