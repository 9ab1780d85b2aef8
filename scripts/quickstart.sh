#!/usr/bin/env bash
# Quickstart: builds the sandbox image and the binaries (into ./bin), then runs sandboxd
# in the foreground on SQLite (./.data), listening on 127.0.0.1:8080. Needs Docker and Go.
# Extra arguments go to sandboxd (e.g. --ttl 10m); Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

# The image is FROM scratch plus a static busybox (see scripts/build-image.sh).
if [ ! -x "${BUSYBOX:-/bin/busybox}" ] && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "quickstart: installing busybox-static" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq busybox-static
fi
scripts/build-image.sh

mkdir -p bin
go build -o bin/sandboxd ./cmd/sandboxd
# The in-sandbox agent, static: sandboxd finds it beside itself and mounts it, read-only,
# into every sandbox (docker.agent).
CGO_ENABLED=0 go build -o bin/sandboxd-agent ./cmd/sandboxd-agent
go build -o bin/sandboxctl ./cmd/sandboxctl
echo "quickstart: starting sandboxd; in another shell: ./bin/sandboxctl create $(cat /proc/sys/kernel/random/uuid)" >&2
exec ./bin/sandboxd --log-format text "$@"
