"""OpenAI chat messages rendered into a prompt by the model's own chat template (the tokenizer's).

Messages go to the template as Hugging Face templates expect them: text parts joined into one string, ``None``
fields dropped (``content`` kept), and the JSON text of each tool call's arguments parsed into an object. A
template that cannot render the messages (roles out of order, a field it needs missing) is the client's 400.
"""

from __future__ import annotations

import json

from jinja2 import TemplateError

from lamps_jax.server.errors import bad_request
from lamps_jax.server.protocol import ChatMessage, TextPart, ToolCallParam

TEMPLATE_ERRORS = (TemplateError, TypeError, ValueError)  # what a template that cannot render raises


def _text(content: str | list[TextPart] | None) -> str | None:
    if isinstance(content, list):
        return "\n".join(part.text for part in content)
    return content


def _arguments(call: ToolCallParam, param: str) -> dict:
    try:
        arguments = json.loads(call.function.arguments)
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise bad_request(f"the arguments of tool call {call.id!r} are not a JSON object", "invalid_value", param)
    return arguments


def _template_message(message: ChatMessage, index: int) -> dict:
    fields = message.model_dump(exclude_none=True) | {"content": _text(message.content)}
    if message.tool_calls:
        fields["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type,
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments(call, f"messages.{index}.tool_calls.{position}.function.arguments"),
                },
            }
            for position, call in enumerate(message.tool_calls)
        ]
    return fields


def template_conversation(tokenizer, messages: list[ChatMessage]) -> list[dict]:
    """``messages`` as the model's chat template takes them; refuses a model without a template."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise bad_request(
            "this model's tokenizer has no chat template: use /v1/completions", "no_chat_template", "messages"
        )
    return [_template_message(message, index) for index, message in enumerate(messages)]


def apply_template(tokenizer, conversation: list[dict], tools: list[dict] | None, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        conversation, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def render_chat(tokenizer, conversation: list[dict], tools: list[dict] | None) -> str:
    """The prompt text of ``conversation`` with the assistant's turn opened; ``tools`` as the template takes them."""
    try:
        return apply_template(tokenizer, conversation, tools, add_generation_prompt=True)
    except TEMPLATE_ERRORS as err:
        raise bad_request(
            f"the model's chat template cannot render these messages: {err}", "chat_template_error", "messages"
        ) from err
