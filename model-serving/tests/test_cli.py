from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from genai_factory.serving.cli import server_config_for, serving
from genai_factory.serving.server import config as config_module
from genai_factory.serving.server.config import LLAMACPP_ENGINE


def test_models_lists_the_packaged_model() -> None:
    result = CliRunner().invoke(serving, ["models"])
    assert result.exit_code == 0, result.output
    assert "smollm2" in result.output
    assert ".gguf" in result.output


@pytest.mark.integration
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_chat_prints_a_real_answer(stream: str) -> None:
    result = CliRunner().invoke(
        serving, ["chat", "What is 2 plus 2?", "--max-tokens", "12", stream]
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip()) > 0


def test_chat_rejects_a_negative_token_cap() -> None:
    result = CliRunner().invoke(serving, ["chat", "hi", "--max-tokens", "-1"])
    assert result.exit_code == 2
    assert "max-tokens" in result.output


# ---------------------------------------------------------------------------------------------
# gf serving serve


def test_serve_defaults_to_the_packaged_model_on_llama_cpp() -> None:
    config = server_config_for(None, None, None)
    (model,) = config.models
    assert (model.name, model.engine.type, model.preload) == ("smollm2", LLAMACPP_ENGINE, True)
    assert model.engine.params == {"model": "smollm2"}


def test_serve_parallel_sets_the_llama_cpp_slots_and_the_concurrency(tmp_path: Path) -> None:
    (default,) = server_config_for(None, None, None).models
    assert default.max_concurrency == config_module.LLAMACPP_PARALLEL
    (model,) = server_config_for(None, None, None, 8).models
    assert model.engine.params == {"model": "smollm2", "parallel": 8}
    assert model.max_concurrency == 8
    path = tmp_path / "serving.yaml"
    path.write_text("serving:\n  models:\n    - name: a\n")
    with pytest.raises(click.UsageError, match="--parallel"):
        server_config_for(None, None, str(path), 2)
    result = CliRunner().invoke(serving, ["serve", "--engine", "torch", "--parallel", "2"])
    assert result.exit_code == 2 and "--parallel" in result.output
    result = CliRunner().invoke(serving, ["serve", "--parallel", "0"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"name": "m"}, config_module.LLAMACPP_PARALLEL),
        ({"name": "m", "engine": {"type": LLAMACPP_ENGINE, "params": {"parallel": 6}}}, 6),
        ({"name": "m", "engine": {"type": LLAMACPP_ENGINE, "params": {}}, "max_concurrency": 2}, 2),
        ({"name": "m", "engine": {"type": "pkg.mod:Other", "params": {"parallel": 6}}}, 1),
    ],
)
def test_max_concurrency_follows_the_llama_cpp_slots(model: dict[str, Any], expected: int) -> None:
    assert config_module.ModelConfig.model_validate(model).max_concurrency == expected


def test_serve_with_the_torch_engine_builds_it_by_import_path() -> None:
    (model,) = server_config_for("smollm2", "torch", None).models
    assert model.engine.type == "genai_factory.serving.torch_engine:TorchChatModel"
    assert model.max_concurrency > 1  # the batching engine takes many requests at once
    assert model.max_choices > 1 and model.logprobs


def test_serve_names_a_gguf_path_by_its_stem(tmp_path: Path) -> None:
    (model,) = server_config_for(str(tmp_path / "tiny.gguf"), None, None).models
    assert model.name == "tiny"


def test_serve_with_a_config_file_preloads_the_chosen_model(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text("serving:\n  memory_budget_mb: 300\n  models:\n    - name: a\n    - name: b\n")
    config = server_config_for("b", None, str(path))
    assert config.memory_budget_mb == 300
    assert {m.name: m.preload for m in config.models} == {"a": False, "b": True}
    with pytest.raises(click.UsageError, match="serves a, b"):
        server_config_for("c", None, str(path))
    with pytest.raises(click.UsageError, match="--engine"):
        server_config_for(None, "torch", str(path))


def test_serve_refuses_an_engine_that_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "TORCH_ENGINE", "genai_factory.serving.no_such:Engine")
    result = CliRunner().invoke(serving, ["serve", "--engine", "torch", "--port", "0"])
    assert result.exit_code == 1
    assert "cannot import module 'genai_factory.serving.no_such'" in result.output


def test_serve_reports_a_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text("serving:\n  models: []\n")
    result = CliRunner().invoke(serving, ["serve", "--config", str(path)])
    assert result.exit_code != 0
    assert "serving.models" in str(result.exception) + result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
@pytest.mark.slow
def test_serve_runs_rest_and_grpc_then_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    port, grpc_port = _free_port(), _free_port()
    config = tmp_path / "serving.yaml"
    config.write_text(
        "serving:\n"
        "  embeddings: []\n"
        "  models:\n"
        "    - name: smollm2\n"
        "      max_output_tokens: 16\n"
        "      engine:\n"
        f"        type: {LLAMACPP_ENGINE}\n"
        "        params: {model: smollm2, context_window: 512, threads: 1}\n"
    )
    command = [
        sys.executable,
        "-c",
        "from genai_factory.shared.cli import main; main()",
        "serving",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--log-level",
        "warning",
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        }
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120).status_code == 200
        answer = asyncio.run(_grpc_generate(grpc_port))
        assert answer.usage.completion_tokens <= 4
        # a stream in flight when SIGTERM arrives still finishes
        with httpx.stream(
            "POST",
            f"{base}/v1/chat/completions",
            json=body | {"stream": True, "max_tokens": 12},
            timeout=120,
        ) as stream:
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert json.loads(first.removeprefix("data: "))["object"] == "chat.completion.chunk"
        assert rest[-1] == "data: [DONE]"
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def _grpc_generate(port: int) -> Any:
    import grpc  # type: ignore[import-untyped]

    from genai_factory.serving.rpc import serving_pb2, serving_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = serving_pb2_grpc.ServingStub(channel)
        return await stub.Generate(
            serving_pb2.GenerateRequest(
                model="smollm2",
                messages=[serving_pb2.Message(role="user", content="Hi")],
                max_tokens=4,
            )
        )
