"""``gf serving``: talk to the local model from the command line."""

from __future__ import annotations

import asyncio
import sys

import click

from genai_factory.serving.registry import PACKAGED_MODELS, resolve_model_path
from genai_factory.shared.models import ChatCompletionRequest, ChatMessage, parse

__all__ = ["serving"]


@click.group("serving")
def serving() -> None:
    """Local inference: the packaged SmolLM2 model through llama.cpp."""


@serving.command("models")
def models_command() -> None:
    """List the models that ship inside installed packages."""
    for name, model in sorted(PACKAGED_MODELS.items()):
        click.echo(f"{name:<12} {model.description}  ({resolve_model_path(name)})")


@serving.command("chat")
@click.argument("prompt")
@click.option(
    "--model",
    default="smollm2",
    show_default=True,
    help="a packaged model's name or a path to a .gguf file",
)
@click.option("--system", "system_prompt", default=None, help="a system message")
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), default=0.0, show_default=True)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="print tokens as they are generated",
)
def chat_command(
    prompt: str,
    model: str,
    system_prompt: str | None,
    max_tokens: int,
    temperature: float,
    stream: bool,
) -> None:
    """Ask the local model one question and print its answer."""
    from genai_factory.serving.engines.llamacpp import LlamaCppChatModel

    messages = [ChatMessage(role="system", content=system_prompt)] if system_prompt else []
    messages.append(ChatMessage(role="user", content=prompt))
    request = parse(
        ChatCompletionRequest,
        {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        },
    )
    engine = LlamaCppChatModel(model)

    async def run() -> None:
        if stream:
            async for chunk in engine.stream(request):
                for choice in chunk.choices:
                    if choice.delta.content:
                        sys.stdout.write(choice.delta.content)
                        sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            answer = await engine.complete(request)
            click.echo(answer.text())

    asyncio.run(run())
