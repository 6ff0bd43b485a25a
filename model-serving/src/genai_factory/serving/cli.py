"""``gf serving``: talk to the local model, list the packaged models, or serve them over HTTP."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from genai_factory.serving.registry import PACKAGED_MODELS, resolve_model_path
from genai_factory.shared.errors import ConfigError
from genai_factory.shared.models import ChatCompletionRequest, ChatMessage, parse

if TYPE_CHECKING:
    from genai_factory.serving.server.config import ServerConfig

__all__ = ["server_config_for", "serving"]


@click.group("serving")
def serving() -> None:
    """Local inference: the packaged SmolLM2 model through llama.cpp (or the PyTorch engine)."""


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
    engine = LlamaCppChatModel(model, parallel=1)  # one question: one slot

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


ENGINES = ("llamacpp", "torch")


def server_config_for(
    model: str | None,
    engine: str | None,
    config_path: str | None,
    parallel: int | None = None,
) -> ServerConfig:
    """The server config: the file (or $GF_CONFIG) if any, with ``--model``/``--engine`` on top.

    Without a file: one model named ``--model`` (default smollm2) on the chosen engine,
    preloaded. With a file, ``--model`` picks which of its models is preloaded (it must be one)
    and ``--engine``/``--parallel`` are not allowed (the file says how each model is run).
    ``--parallel`` is the llama.cpp engine's batch slots (and the requests it takes at once).
    """
    from genai_factory.serving.server.config import (
        LLAMACPP_ENGINE,
        TORCH_ENGINE,
        ModelConfig,
        load_serving_settings,
    )

    settings = load_serving_settings(config_path)
    config = settings.serving
    from_file = config_path is not None or "models" in config.model_fields_set
    if from_file:
        if engine is not None or parallel is not None:
            raise click.UsageError(
                "--engine and --parallel apply without --config; set each model's engine there"
            )
        if model is not None:
            names = [m.name for m in config.models]
            if model not in names:
                raise click.UsageError(f"--model {model}: the config serves {', '.join(names)}")
            models = [m.model_copy(update={"preload": m.name == model}) for m in config.models]
            config = config.model_copy(update={"models": models})
        return config
    name = model or "smollm2"
    if (engine or "llamacpp") == "torch":
        spec = {"type": TORCH_ENGINE, "params": {"model": name}}
        # the batching engine takes many requests at once, several choices each, with logprobs
        entry = ModelConfig.model_validate(
            {
                "name": _served_name(name),
                "engine": spec,
                "max_concurrency": 16,
                "max_choices": 8,
                "logprobs": True,
                "preload": True,
            }
        )
    else:
        params: dict[str, object] = {"model": name}
        if parallel is not None:
            params["parallel"] = parallel
        spec = {"type": LLAMACPP_ENGINE, "params": params}
        # max_concurrency follows the engine's batch slots (ModelConfig's default)
        entry = ModelConfig.model_validate(
            {"name": _served_name(name), "engine": spec, "preload": True}
        )
    return config.model_copy(update={"models": [entry]})


def _served_name(model: str) -> str:
    """A path to a .gguf file is served under the file's stem."""
    from pathlib import Path

    return Path(model).stem if model.endswith(".gguf") else model


@serving.command("serve")
@click.option("--model", default=None, help="the model to serve (default: smollm2)")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=None,
    help="llamacpp (default) or torch (the batching PyTorch engine)",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to bind")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="also serve gRPC on this port",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="YAML settings with a 'serving:' section (default: $GF_CONFIG)",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 256),
    default=None,
    help="llama.cpp engine: sequences batched together (default 4)",
)
@click.option("--log-level", default="info", show_default=True)
def serve_command(
    model: str | None,
    engine: str | None,
    host: str,
    port: int,
    grpc_port: int | None,
    config_path: str | None,
    parallel: int | None,
    log_level: str,
) -> None:
    """Serve the OpenAI-compatible API (and gRPC) until Ctrl-C or SIGTERM."""
    from genai_factory.serving.server.runner import serve

    if parallel is not None and engine == "torch":
        raise click.UsageError("--parallel applies to the llamacpp engine (torch: --config)")
    config = server_config_for(model, engine, config_path, parallel)
    if grpc_port is not None:
        config = config.model_copy(update={"grpc_port": grpc_port})
    try:
        config_check(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    asyncio.run(serve(config, host=host, port=port, log_level=log_level))


def config_check(config: ServerConfig) -> None:
    """Fail early, with the reason, if an engine class cannot be imported."""
    from genai_factory.serving.server.manager import ModelManager

    ModelManager(config.models, memory_budget_mb=config.memory_budget_mb).check()
