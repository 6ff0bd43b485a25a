"""benchmarks/run.py: the README's benchmark blocks are rebuilt from the JSON results only."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def _write(path: Path, data: dict[str, object]) -> None:
    path.write_text(json.dumps(data))


def test_marked_blocks_become_the_machine_line_and_the_stored_table(
    run: ModuleType, tmp_path: Path
) -> None:
    _write(
        tmp_path / "server.json",
        {
            "machine": {
                "cpu": "Test CPU",
                "cpus": 2,
                "python": "3.11.7",
                "load_average_before": [1.25, 1.0, 0.5],
                "load_average_after": [2.5, 1.0, 0.5],
            },
            "table": "| a |\n|---|\n| 7.5 |\n",
        },
    )
    _write(
        tmp_path / "torch_x.json",
        {"machine": {"cpu": "Other", "cores": 4, "load_average_1m": 3.0}, "table": "| b |"},
    )
    readme = (
        "intro\n<!-- bench:server -->\nold numbers 1.0\n<!-- /bench:server -->\nmiddle\n"
        "<!-- bench:torch_x -->\n<!-- /bench:torch_x -->\n"
        "<!-- bench:missing -->\nkept\n<!-- /bench:missing -->\nend\n"
    )
    text, skipped = run.render(readme, tmp_path)
    assert skipped == ["missing"]
    assert "old numbers" not in text
    assert (
        "<!-- bench:server -->\nMeasured on: Test CPU, 2 CPUs, Python 3.11.7, 1-minute load "
        "average 1.2 before, 2.5 after.\n\n| a |\n|---|\n| 7.5 |\n<!-- /bench:server -->"
    ) in text
    assert "Measured on: Other, 4 CPUs, 1-minute load average 3.0.\n\n| b |\n" in text
    assert "<!-- bench:missing -->\nkept\n<!-- /bench:missing -->" in text
    assert text.startswith("intro\n") and text.endswith("end\n")
    # rendering again changes nothing: the blocks keep their markers
    assert run.render(text, tmp_path)[0] == text


def test_update_readme_rewrites_the_file(run: ModuleType, tmp_path: Path) -> None:
    _write(tmp_path / "a.json", {"machine": {}, "table": "| new |"})
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:a -->\n| old |\n<!-- /bench:a -->\n")
    assert run.update_readme(readme, tmp_path) == []
    assert "| new |" in readme.read_text() and "| old |" not in readme.read_text()
    assert "unknown CPU" in readme.read_text()


def test_a_json_without_a_table_leaves_its_block(run: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    _write(tmp_path / "b.json", {"machine": {}})
    readme = "<!-- bench:a -->\nx\n<!-- /bench:a -->\n<!-- bench:b -->\ny\n<!-- /bench:b -->\n"
    text, skipped = run.render(readme, tmp_path)
    assert text == readme and skipped == ["a", "b"]


@given(st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=60))
def test_text_outside_the_blocks_is_kept(text: str) -> None:
    spec = importlib.util.spec_from_file_location("bench_run_h", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered, skipped = module.render(text, Path("/nonexistent"))
    assert rendered == text and skipped == []


def test_the_module_readme_has_a_block_for_every_benchmark_with_a_table(
    run: ModuleType,
) -> None:
    readme = run.README.read_text()
    names = {m.group("name") for m in run._BLOCK.finditer(readme)}
    assert "server" in names
    for path in run.RESULTS.glob("*.json"):
        if "table" in json.loads(path.read_text()):
            assert path.stem in names, f"README has no block for {path.name}"


def test_main_runs_every_script_then_rebuilds_the_tables(
    run: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    writer = (
        "import json, pathlib\n"
        "here = pathlib.Path(__file__).parent\n"
        "(here / 'results' / 'NAME.json').write_text(json.dumps({'table': '| NAME ok |'}))\n"
    )
    (tmp_path / "bench_a.py").write_text(writer.replace("NAME", "a"))
    (tmp_path / "bench_b.py").write_text("raise SystemExit(3)\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:a -->\nold\n<!-- /bench:a -->\n")
    monkeypatch.setattr(run, "HERE", tmp_path)
    monkeypatch.setattr(run, "RESULTS", results)
    monkeypatch.setattr(run, "README", readme)
    assert run.main(["a"]) == 0
    assert "| a ok |" in readme.read_text()
    readme.write_text("<!-- bench:a -->\nold\n<!-- /bench:a -->\n")
    assert run.main([]) == 1  # bench_b failed, but a's table is still rebuilt
    assert "| a ok |" in readme.read_text()
    assert run.main(["nothing"]) == 0
    readme.write_text("<!-- bench:a -->\nold\n<!-- /bench:a -->\n")
    assert run.main(["--tables"]) == 0 and "| a ok |" in readme.read_text()


def test_a_named_key_renders_that_table_or_mapping(run: ModuleType, tmp_path: Path) -> None:
    _write(
        tmp_path / "spec.json",
        {"machine": {}, "table": "| t |", "table_load": "| l |", "verdicts": {"a": "pays"}},
    )
    readme = (
        "<!-- bench:spec:table_load -->\n<!-- /bench:spec:table_load -->\n"
        "<!-- bench:spec:verdicts -->\nold\n<!-- /bench:spec:verdicts -->\n"
        "<!-- bench:spec:absent -->\nkept\n<!-- /bench:spec:absent -->\n"
    )
    text, skipped = run.render(readme, tmp_path)
    assert "| l |" in text and "| t |" not in text
    assert "- a: pays\n<!-- /bench:spec:verdicts -->" in text and "old" not in text
    assert skipped == ["spec:absent"]
