"""``gf observability``: the console server as a user starts it, and the price table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from genai_factory.observability.cli import observability

from .conftest import free_port


@pytest.mark.unit
def test_prices_prints_the_versioned_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(observability, ["prices"])
    assert result.exit_code == 0
    assert result.output.startswith("price table 2025.06.1 (2025-06-01)")
    assert "gpt-4o-mini" in result.output and "smollm2" in result.output
    custom = tmp_path / "p.yaml"
    custom.write_text(
        "version: 'x1'\ndate: '2031-02-03'\nmodels:\n  only-model: {input: 1, output: 2}\n"
    )
    result = CliRunner().invoke(observability, ["prices", "--file", str(custom)])
    assert "x1 (2031-02-03)" in result.output and "only-model" in result.output


@pytest.mark.e2e
def test_serve_starts_the_console_and_metrics_on_loopback(tmp_path: Path) -> None:
    gf = shutil.which("gf", path=str(Path(sys.executable).parent)) or "gf"
    port = free_port()
    env = os.environ | {
        "GF_CONSOLE_TOKEN": "tok-123456",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    process = subprocess.Popen(
        [gf, "observability", "serve", "--port", str(port), "--db", str(tmp_path / "t.db")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"{base}/console/", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("gf observability serve did not start")
                time.sleep(0.2)
        assert page.status_code == 200 and "GenAI Factory" in page.text
        assert httpx.get(f"{base}/console/api/summary").status_code == 401
        authorised = httpx.get(
            f"{base}/console/api/summary", headers={"authorization": "Bearer tok-123456"}
        )
        assert authorised.json()["model_calls"] == 0
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert (tmp_path / "t.db").is_file()
