#!/usr/bin/env bash
# Creates .venv and installs shared + every module in editable mode, pinned by constraints.txt.
# Idempotent: a stamp keyed on the hash of every file that decides the install skips the work
# on a second run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV=.venv
MODULES=(shared model-serving llm-gateway prompt-framework rag-pipeline agent-orchestration evaluation
         observability fine-tuning guardrails semantic-cache workflow knowledge-graph multimodal
         security cost-optimization)

inputs=(constraints.txt requirements-dev.txt scripts/install.sh)
for m in "${MODULES[@]}"; do inputs+=("$m/pyproject.toml"); done
stamp_hash=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
stamp="$VENV/.gf-install-$stamp_hash"

if [[ -f "$stamp" ]]; then
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[install] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

# torch first and pinned: the CPU wheel; an unpinned resolve would pull gigabytes of CUDA packages.
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('torch').startswith('2.13.0')" 2>/dev/null; then
  echo "[install] torch==2.13.0 (CPU)"
  "${pip[@]}" install -q torch==2.13.0 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
fi

editable=()
for m in "${MODULES[@]}"; do
  # every module declares a `test` extra (possibly empty) for what only its tests need
  editable+=(-e "./$m[test]")
done

echo "[install] shared + ${#MODULES[@]} modules (editable, constrained); llama-cpp-python compiles once per machine"
# llama.cpp: no multimodal tools, parallel build on both cores.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
# (the machine's pip config names local mirrors that may be absent: drop those warnings)
"${pip[@]}" install -q -c constraints.txt -r requirements-dev.txt "${editable[@]}" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# unstructured[pdf] (and timm) can pull a CUDA torchvision that breaks sentence-transformers.
if "$VENV/bin/python" -m pip show -q torchvision >/dev/null 2>&1; then
  "${pip[@]}" uninstall -q -y torchvision
fi

rm -f "$VENV"/.gf-install-*
touch "$stamp"
echo "[install] done"
