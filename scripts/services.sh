#!/usr/bin/env bash
# Make sure the loopback services the integration tests use are up (they start with the machine;
# this restarts any that stopped, with the commands from ../shared/SERVICES.md).
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do up "$port" && { echo "[services] $name up on :$port"; return 0; }; sleep 1; done
  echo "[services] $name did not come up on :$port" >&2
  return 1
}

status=0
if ! up 6379; then
  echo "[services] starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
wait_for Redis 6379 || status=1

if ! up 5432; then
  echo "[services] starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
wait_for PostgreSQL 5432 || status=1

if ! up 5672; then
  echo "[services] starting RabbitMQ"
  rabbitmq-server -detached || true
fi
wait_for RabbitMQ 5672 || status=1
exit $status
