"""What follows a server-side tool call in the model's context: written by the model's own chat template.

The model's text stops right after its call; the chat template says what comes next: the end of the assistant's
turn, the tool's message, and the assistant's turn opened again. Both are read off renders of the conversation:
the end of turn from an assistant message holding a marker (what the template writes after it), and the tool
message as the difference between the conversation ending in an assistant tool call and the same conversation with
the tool's answer and the generation prompt (e.g. Qwen2.5: ``<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n...
</tool_response><|im_end|>\\n<|im_start|>assistant\\n``). Every call is written as if it were the first tool
exchange after the request's messages: templates write a tool message the same way whatever came before it.
"""

from __future__ import annotations

import uuid

from lamps_jax.request import ApiCall
from lamps_jax.server.chat_template import TEMPLATE_ERRORS, apply_template

_MARKER = f"lamps-{uuid.uuid4().hex}"


class ToolTurns:
    def __init__(self, tokenizer, conversation: list[dict], tools: list[dict] | None) -> None:
        self._tokenizer, self._conversation, self._tools = tokenizer, conversation, tools
        marked = apply_template(tokenizer, [*conversation, {"role": "assistant", "content": _MARKER}], tools, False)
        if _MARKER not in marked:
            raise ValueError("the chat template does not write the assistant's message")
        self._end_of_turn = marked[marked.rindex(_MARKER) + len(_MARKER) :]

    def text(self, call: ApiCall, result: str) -> str:
        """The text appended to the context after ``call`` answered ``result``."""
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        function = {"name": call.name, "arguments": call.arguments if isinstance(call.arguments, dict) else {}}
        assistant = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": call_id, "type": "function", "function": function}],
        }
        answer = {"role": "tool", "tool_call_id": call_id, "name": call.name, "content": result}
        called = apply_template(self._tokenizer, [*self._conversation, assistant], self._tools, False)
        answered = apply_template(self._tokenizer, [*self._conversation, assistant, answer], self._tools, True)
        if not answered.startswith(called):
            raise ValueError("the chat template rewrites the conversation when a tool message follows a tool call")
        return self._end_of_turn + answered[len(called) :]

    def check(self, tool_name: str) -> None:
        """Raises ``ValueError`` if a result of ``tool_name`` cannot be written (called before the request runs)."""
        try:
            self.text(ApiCall(tool_name, {}), "")
        except TEMPLATE_ERRORS as err:
            raise ValueError(f"the chat template cannot write a tool's result: {err}") from err
