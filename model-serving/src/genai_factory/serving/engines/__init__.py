"""Inference engines. Each implements :class:`genai_factory.shared.contracts.ChatModel`."""
