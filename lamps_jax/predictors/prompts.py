"""Prompt sets for collecting output lengths: the INFERCEPT traces' text prompts and a built-in varied set.

Each ``LengthPrompt`` carries a type (for the per-type-mean baseline) and a group: prompts of one group
(one trace conversation, one built-in template) go to the same side of the held-out split, so the head
is scored on conversations it never saw.

- ``traces``: every distinct segment prompt of the trace files' text records (multi-turn chat, chat +
  text-to-speech, chat + image generation; a later segment's prompt holds the conversation so far), typed
  by the request's calls, grouped by the conversation's first prompt, cut to ``max_prompt_chars`` from the end.
- ``builtin``: questions, instructions and tool-use prompts (a system prompt offers tools called with
  ``<tool_call>`` tags), each a template filled with one of 24 subjects; typed by template, grouped by subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lamps_jax.workload.traces import TRACE_FILES, classify_text_call, traces_dir

PROMPT_SETS = ("traces", "builtin")
TOOL_CALL_TAG = "<tool_call>"
TOOL_SYSTEM_PROMPT = (
    'You are a helpful assistant with tools. To use one, write <tool_call>{"name": ..., "arguments": {...}}'
    "</tool_call> and stop. Tools: calculator(expression), search(query), weather(city), calendar(date)."
)


@dataclass(frozen=True)
class LengthPrompt:
    text: str  # the user message
    type: str  # chat, chat+tts, chat+image (traces); question, instruction, tool_use (builtin)
    group: str  # prompts of a group stay on one side of the held-out split
    system: str | None = None  # a system message (tool-use prompts)


def trace_prompts(folder: Path | None = None, max_prompt_chars: int = 2000) -> list[LengthPrompt]:
    """The distinct text prompts of both traces, in file order."""
    folder = folder or traces_dir()
    prompts: dict[str, LengthPrompt] = {}
    for name in TRACE_FILES.values():
        with open(folder / name) as f:
            records = json.load(f)
        for segments in records.values():
            if "prompt" not in segments[0]:
                continue  # a numeric record: token counts only
            calls = {classify_text_call(s["api_token"]) for s in segments if "api_token" in s}
            kind = "chat" + "".join(f"+{c}" for c in ("tts", "image") if c in calls)
            group = f"trace:{segments[0]['prompt'][:80]}"
            for segment in segments:
                text = segment["prompt"][-max_prompt_chars:].strip()
                if text and text not in prompts:
                    prompts[text] = LengthPrompt(text, kind, group)
    return list(prompts.values())


_QUESTIONS = [
    "What is {}?",
    "Why does {} matter?",
    "Give a one-word answer: is {} a living thing?",
    "How would you explain {} to a ten-year-old?",
    "What are the main arguments for and against {}?",
    "When was {} first described, in one sentence?",
    "List three facts about {}.",
    "Compare {} with something similar, in detail.",
]
_INSTRUCTIONS = [
    "Write a haiku about {}.",
    "Write a detailed essay about {}, with an introduction, three sections and a conclusion.",
    "Summarize {} in one sentence.",
    "Write a short story in which {} plays a central role.",
    "Give step-by-step instructions for learning about {}.",
    "Write a product description for a book on {}.",
    "Translate the phrase 'I like {}' into French, Spanish and German.",
    "Write a limerick about {}.",
]
_TOOL_USES = [
    "What is 17 times 23 plus the number of letters in '{}'?",
    "Search the web for the latest news about {} and summarize it.",
    "What is the weather like today in the city most associated with {}?",
    "Put a reminder about {} in my calendar for next Monday.",
    "Tell me about {}. Use a tool only if you need one.",
    "How many days are there until the next conference on {}? Check the calendar.",
]
_SUBJECTS = [
    "photosynthesis",
    "the French Revolution",
    "black holes",
    "machine learning",
    "the water cycle",
    "jazz music",
    "the Roman Empire",
    "climate change",
    "quantum computing",
    "the human heart",
    "volcanoes",
    "chess",
    "the printing press",
    "coffee",
    "honeybees",
    "the stock market",
    "Shakespeare",
    "the Moon landing",
    "vaccines",
    "the Great Wall of China",
    "electric cars",
    "origami",
    "the Internet",
    "dinosaurs",
]


def builtin_prompts() -> list[LengthPrompt]:
    """Templates x subjects: 8 question, 8 instruction and 6 tool-use templates over 24 subjects (528 prompts)."""
    prompts = []
    for kind, templates, system in (
        ("question", _QUESTIONS, None),
        ("instruction", _INSTRUCTIONS, None),
        ("tool_use", _TOOL_USES, TOOL_SYSTEM_PROMPT),
    ):
        for template in templates:
            for subject in _SUBJECTS:
                prompts.append(LengthPrompt(template.format(subject), kind, f"builtin:{subject}", system))
    return prompts


def load_prompt_sets(names: list[str], max_prompt_chars: int = 2000) -> list[LengthPrompt]:
    unknown = [n for n in names if n not in PROMPT_SETS]
    if unknown or not names:
        raise ValueError(f"prompt sets are {', '.join(PROMPT_SETS)}; got {', '.join(names) or 'none'}")
    prompts = []
    for name in names:
        prompts += trace_prompts(max_prompt_chars=max_prompt_chars) if name == "traces" else builtin_prompts()
    return prompts
