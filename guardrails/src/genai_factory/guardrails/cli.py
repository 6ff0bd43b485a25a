"""``gf guard``: scan files of requests or answers, verify the audit log, serve the guard.

``gf guard scan --input FILE.jsonl [--direction input|output]`` prints one verdict JSON per
input line. A line is a chat request (``{"model": ..., "messages": [...]}``), an object with
``request`` (and ``principal``; ``text`` too for output), or just ``{"text": "..."}`` (taken as
one user message). A line that cannot be read gives ``{"line": N, "error": {...}}`` instead and
the command exits with status 2 at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from genai_factory.shared.contracts import Guard
from genai_factory.shared.errors import GFError, ValidationError, error_body
from genai_factory.shared.models import ChatCompletionRequest, Principal, parse

__all__ = ["guard"]


def _load_guard(config: str | None, ner: bool) -> Guard:
    if config:
        from genai_factory.shared.factory import build_component
        from genai_factory.shared.settings import read_yaml

        spec = read_yaml(Path(config))
        spec = spec.get("guard", spec)
        built: Guard = build_component(spec, Guard, where="guard")
        return built
    from genai_factory.guardrails.composite import CompositeGuard

    return CompositeGuard.default(use_ner=ner)


def _parse_line(
    raw: Any, direction: str
) -> tuple[str | None, ChatCompletionRequest, Principal | None]:
    if not isinstance(raw, dict):
        raise ValidationError("each line must be a JSON object")
    principal = parse(Principal, raw["principal"]) if raw.get("principal") else None
    if "request" in raw:
        request = parse(ChatCompletionRequest, raw["request"])
    elif "messages" in raw:
        request = parse(ChatCompletionRequest, raw)
    elif direction == "input" and isinstance(raw.get("text"), str):
        request = parse(
            ChatCompletionRequest,
            {"model": "scan", "messages": [{"role": "user", "content": raw["text"]}]},
        )
    else:
        raise ValidationError("a line needs 'messages', 'request' or (for input) 'text'")
    text = raw.get("text") if direction == "output" else None
    if direction == "output" and not isinstance(text, str):
        raise ValidationError("an output line needs 'text' (the answer)", param="text")
    return text, request, principal


async def _scan(guard: Guard, lines: TextIO, direction: str, out: TextIO) -> int:
    failures = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text, request, principal = _parse_line(json.loads(line), direction)
            if direction == "input":
                verdict = await guard.check_input(request, principal)
            else:
                verdict = await guard.check_output(text or "", request, principal)
            out.write(json.dumps({"line": number, **verdict.model_dump(mode="json")}) + "\n")
        except (json.JSONDecodeError, GFError) as exc:
            failures += 1
            problem = (
                ValidationError(f"not JSON: {exc.msg}")
                if isinstance(exc, json.JSONDecodeError)
                else exc
            )
            out.write(json.dumps({"line": number, **error_body(problem)}) + "\n")
        out.flush()
    return failures


@click.group("guard")
def guard() -> None:
    """Guardrails: PII, prompt injection, output rails, policies, audit log."""


@guard.command("scan")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSONL file ('-' for stdin)",
)
@click.option(
    "--direction", type=click.Choice(["input", "output"]), default="input", show_default=True
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML with a guard component spec",
)
@click.option(
    "--ner/--no-ner", default=True, show_default=True, help="the spaCy layer of the default guard"
)
def scan_command(input_path: str, direction: str, config: str | None, ner: bool) -> None:
    """Print one verdict JSON per line of a JSONL file of requests (or answers)."""
    guard_obj = _load_guard(config, ner)
    if input_path == "-":
        failures = asyncio.run(_scan(guard_obj, sys.stdin, direction, sys.stdout))
    else:
        try:
            handle = open(input_path, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise click.ClickException(f"cannot read {input_path}: {exc.strerror}") from None
        with handle:
            failures = asyncio.run(_scan(guard_obj, handle, direction, sys.stdout))
    if failures:
        click.echo(f"{failures} line(s) could not be scanned", err=True)
        sys.exit(2)


@guard.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
@click.option("--db", "url", required=True, help="sqlite:///path.db or postgresql://...")
@click.option("--key-env", default=None, help="environment variable holding the HMAC key")
@click.option("--table", default="guard_audit", show_default=True)
def audit_verify(url: str, key_env: str | None, table: str) -> None:
    """Check every record's hash chain; exit 1 naming each edited or deleted record."""
    from genai_factory.guardrails.audit import AuditLog

    key = os.environ.get(key_env) if key_env else None
    if key_env and not key:
        raise click.ClickException(f"${key_env} is not set")
    try:
        log = AuditLog(url, key=key, table=table)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> Any:
        try:
            return await log.verify()
        finally:
            await log.close()

    report = asyncio.run(run())
    for problem in report.problems:
        click.echo(problem)
    if not report.ok:
        click.echo(
            f"TAMPERED: {len(report.problems)} problem(s) in {report.checked} records", err=True
        )
        sys.exit(1)
    click.echo(f"ok: {report.checked} records, head {report.head}")


@guard.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--config", type=click.Path(dir_okay=False), default=None)
@click.option("--ner/--no-ner", default=True, show_default=True)
@click.option("--api-key-env", default=None, help="environment variable holding the bearer token")
def serve_command(
    host: str, port: int, config: str | None, ner: bool, api_key_env: str | None
) -> None:
    """Run the HTTP service (POST /v1/guard/input, /v1/guard/output)."""
    import uvicorn

    from genai_factory.guardrails.service import create_app

    key = os.environ.get(api_key_env) if api_key_env else None
    uvicorn.run(create_app(_load_guard(config, ner), api_key=key), host=host, port=port)
