#!/usr/bin/env bash
# Debian packages some tests use for real: headless Chromium (console e2e tests through
# Playwright, never a browser download) and the Prometheus binary (scrapes /metrics in an e2e test).
# Installs what is missing when run as root; otherwise says what those tests will skip.
set -uo pipefail
needed=()
command -v chromium >/dev/null 2>&1 || needed+=(chromium)
command -v prometheus >/dev/null 2>&1 || needed+=(prometheus)
[[ ${#needed[@]} -eq 0 ]] && { echo "[system] chromium and prometheus present"; exit 0; }
if [[ $(id -u) -ne 0 ]]; then
  echo "[system] not root: cannot install ${needed[*]}; tests needing them will skip" >&2
  exit 0
fi
echo "[system] installing ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
# the Debian prometheus package starts a system service; tests run their own instance
pkill -x prometheus 2>/dev/null || true
command -v chromium >/dev/null && command -v prometheus >/dev/null
