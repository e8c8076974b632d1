"""OpenAI-compatible serving of the engine's outputs, starting with the tool-call parsers."""
