#!/usr/bin/env bash
# The platform's main job (`make demo`): model serving + the gateway with every built module
# wired in by config (demo/platform.yaml), then a tour of real requests a user can watch.
# Everything binds 127.0.0.1 on free ports and runs offline; every process started here stops
# on exit. The gateway stays up for the console until Ctrl-C; GF_DEMO_EXIT=1 ends after the tour.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True DO_NOT_TRACK=true
py=.venv/bin/python
gf=.venv/bin/gf

data=$(mktemp -d "${TMPDIR:-/tmp}/gf-demo.XXXXXX")
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # up to 10 s each to drain and exit, then for good
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$data"
  exit "$status"
}
trap cleanup EXIT
trap 'echo; echo "== stopping"; exit 0' INT TERM

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready NAME URL PID LOG SECONDS: until URL answers 200, or fail showing the log's tail
wait_ready() {
  local name=$1 url=$2 pid=$3 log=$4 deadline=$((SECONDS + $5))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
      echo "!! $name did not become ready ($url); the end of its log:" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

secret() { "$py" -c 'import secrets; print(secrets.token_urlsafe(32))'; }

echo "== GenAI Factory demo: the gateway with every built module, in front of a local model"
echo "   (working files in $data, removed on exit)"

serving_port=$(free_port)
echo "-- starting model serving: SmolLM2-135M-Instruct via llama.cpp on 127.0.0.1:$serving_port"
"$gf" serving serve --model smollm2 --engine llamacpp --host 127.0.0.1 --port "$serving_port" \
  >"$data/serving.log" 2>&1 &
pids+=($!)
serving_pid=$!

# the API keys: issued by the security module, stored as HMACs under a secret made for this run
export GF_SECURITY_API_KEY_SECRET GF_SECURITY_DATA_KEYS
GF_SECURITY_API_KEY_SECRET=$(secret)
# the key that seals the audit trail's payloads (AES-256-GCM, key id demo-1)
GF_SECURITY_DATA_KEYS=$("$py" -c 'from genai_factory.security.encryption import new_key_entry; print(new_key_entry("demo-1"))')
issue_key() {  # issue_key SUBJECT TEAM: prints the key (shown once, never stored in clear)
  "$gf" security keys create --store "$data/api-keys.db" --name "demo $1" --subject "$1" \
    --org demo --team "$2" --user "$1" --role invoker 2>>"$data/keys.log" || {
    echo "!! could not issue an API key:" >&2
    cat "$data/keys.log" >&2
    return 1
  }
}
echo "-- issuing API keys (security): ada and batch-job in team platform, trial-user in team trial"
export GF_DEMO_USER_KEY GF_DEMO_BURST_KEY GF_DEMO_TRIAL_KEY
GF_DEMO_USER_KEY=$(issue_key ada platform)
GF_DEMO_BURST_KEY=$(issue_key batch-job platform)
GF_DEMO_TRIAL_KEY=$(issue_key trial-user trial)

wait_ready "model serving" "http://127.0.0.1:$serving_port/health" "$serving_pid" \
  "$data/serving.log" 180
echo "   model serving is ready"

export GF_DEMO_UPSTREAM="http://127.0.0.1:$serving_port/v1" GF_DEMO_DATA="$data"
export GF_MASTER_KEY GF_DEMO_CONSOLE_TOKEN
GF_MASTER_KEY=$(secret)
GF_DEMO_CONSOLE_TOKEN=$(secret)
gateway_port=$(free_port)
gateway="http://127.0.0.1:$gateway_port"
echo "-- starting the gateway with demo/platform.yaml on $gateway"
"$gf" gateway serve --config demo/platform.yaml --port "$gateway_port" >"$data/gateway.log" 2>&1 &
pids+=($!)
gateway_pid=$!
wait_ready "the gateway" "$gateway/health/readiness" "$gateway_pid" "$data/gateway.log" 120
echo "   the gateway is ready: auth (security) -> rate limits -> budget (cost-optimization) ->"
echo "   guards (guardrails) -> semantic cache -> routing + failover -> model serving;"
echo "   spans, costs and the console (observability)"

tour_status=0
"$py" demo/tour.py --gateway "$gateway" --config demo/platform.yaml || tour_status=$?

echo
echo "== the console (observability): $gateway/console/#token=$GF_DEMO_CONSOLE_TOKEN"
echo "   the OpenAI-compatible API: $gateway/v1 (ada's key for this run: $GF_DEMO_USER_KEY)"
echo "   logs: $data/gateway.log, $data/serving.log"
if [[ "${GF_DEMO_EXIT:-0}" == "1" ]]; then
  exit "$tour_status"
fi
echo "== the platform keeps running for the console; press Ctrl-C to stop it"
wait "$gateway_pid"
