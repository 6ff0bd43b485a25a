#!/usr/bin/env bash
# The platform's main job on embedded defaults: the packaged SmolLM2 model answering through the
# CLI, offline. (The gateway issue grows this into the full platform tour.)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
gf=.venv/bin/gf

echo "== GenAI Factory demo: installed modules"
"$gf" modules
echo
echo "== the local model (SmolLM2-135M-Instruct via llama.cpp, no network) answers, streamed:"
question="What is the capital of France? Answer in one sentence."
echo "Q: $question"
printf 'A: '
"$gf" serving chat --max-tokens 64 "$question"
echo
echo "== and once more, a whole answer at a time, with a system prompt:"
question="Give one tip for writing clear code."
echo "Q: $question"
printf 'A: '
"$gf" serving chat --no-stream --max-tokens 64 --system "You are a concise assistant." "$question"
