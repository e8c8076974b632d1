"""A chat request's tool plan: which tools the chat template shows, which calls the server runs itself, how the
output is read, and what the model is made to write first.

- Tools: the request's ``tools`` (client-side: their calls come back as ``tool_calls``) and the server's own
  (``--tools``; all of them unless the request names a subset in ``server_tools``). Each client tool's
  ``parameters`` must be a JSON Schema of an object; names must be unique and not a server tool's.
- ``tool_choice``: ``none`` shows no tools and reads none; ``auto`` (the default) lets the model choose;
  ``required`` and a named function make the model's turn begin with the parser's call opening (the name too, for a
  named function), so that what it writes is a call; an output that still does not parse into a call to a known
  tool is refused (``invalid_tool_call``) rather than passed off as one. The engine has no grammar-constrained
  decoding: the arguments are the model's, checked only as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jsonschema import Draft202012Validator, SchemaError

from lamps_jax.server.errors import bad_request
from lamps_jax.server.protocol import ChatCompletionRequest, NamedToolChoice
from lamps_jax.server.server_tools import ServerTool
from lamps_jax.server.tool_parsers import ToolCallParser


@dataclass(frozen=True)
class ToolPlan:
    parser: ToolCallParser | None = None  # None: the output is all content
    client_tools: tuple[str, ...] = ()
    server_tools: dict[str, ServerTool] = field(default_factory=dict)
    template_tools: list[dict] | None = None  # the tools as the chat template renders them
    forced_opening: str = ""  # what the assistant's turn begins with (required / named)

    @property
    def known_tools(self) -> tuple[str, ...]:
        return (*self.client_tools, *self.server_tools)


def _check_client_tools(request: ChatCompletionRequest, server_tools: dict[str, ServerTool]) -> None:
    seen: set[str] = set()
    for index, tool in enumerate(request.tools or ()):
        name, param = tool.function.name, f"tools.{index}.function"
        if name in seen:
            raise bad_request(f"two tools are named {name!r}", "duplicate_tool", f"{param}.name")
        if name in server_tools:
            raise bad_request(
                f"{name!r} is one of this server's own tools: rename yours, or leave it out of server_tools",
                "duplicate_tool",
                f"{param}.name",
            )
        seen.add(name)
        schema = tool.function.parameters
        if schema is None:
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as err:
            raise bad_request(
                f"the parameters of {name!r} are not a valid JSON Schema: {err.message}",
                "invalid_tool_schema",
                f"{param}.parameters",
            ) from None
        if schema.get("type", "object") != "object":
            raise bad_request(
                f"the parameters of {name!r} must describe a JSON object, not {schema['type']!r}",
                "invalid_tool_schema",
                f"{param}.parameters",
            )


def _server_tools(request: ChatCompletionRequest, available: dict[str, ServerTool]) -> dict[str, ServerTool]:
    if request.server_tools is None:
        return dict(available)
    unknown = [name for name in request.server_tools if name not in available]
    if unknown:
        offered = ", ".join(available) or "none"
        raise bad_request(
            f"this server has no tool named {unknown[0]!r} (its tools: {offered})", "unknown_tool", "server_tools"
        )
    return {name: available[name] for name in request.server_tools}


def plan_tools(
    request: ChatCompletionRequest, parser: ToolCallParser | None, available: dict[str, ServerTool]
) -> ToolPlan:
    """The request's plan; refuses what cannot be served (400)."""
    server_tools = _server_tools(request, available)
    _check_client_tools(request, server_tools)
    choice = request.tool_choice
    if choice == "none":
        return ToolPlan()
    client_tools = tuple(request.tool_names)
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    forced = choice == "required" or named is not None
    if not client_tools and not server_tools:
        if forced:
            raise bad_request(
                "tool_choice asks for a tool call, but there are no tools", "invalid_value", "tool_choice"
            )
        return ToolPlan()
    if parser is None:
        raise bad_request(
            'tools need a tool-call parser: start the server with --tool-call-parser, or send tool_choice "none"',
            "tool_parser_not_configured",
            "tools",
        )
    if named is not None and named not in (*client_tools, *server_tools):
        raise bad_request(f"tool_choice names {named!r}, which is not among the tools", "unknown_tool", "tool_choice")
    template_tools = [tool.model_dump(exclude_none=True) for tool in request.tools or ()]
    template_tools += [tool.openai_tool() for tool in server_tools.values()]
    opening = parser.forced_opening(named) if forced else ""
    return ToolPlan(parser, client_tools, server_tools, template_tools, opening)
