#!/usr/bin/env bash
# Builds the sandbox base image (sandboxd-sandbox:latest) from images/sandbox without any
# registry: FROM scratch plus the static busybox of Debian's busybox-static (/bin/busybox).
# Idempotent; the layer cache makes a rebuild take about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${SANDBOXD_IMAGE:-sandboxd-sandbox:latest}"
busybox="${BUSYBOX:-/bin/busybox}"

if [ ! -x "$busybox" ]; then
  echo "build-image: no $busybox; install busybox-static" >&2
  exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build-image: $busybox is dynamically linked; the image needs busybox-static" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp images/sandbox/Dockerfile "$ctx/Dockerfile"
cp "$busybox" "$ctx/busybox"
chmod 0755 "$ctx/busybox"

docker build --quiet --tag "$tag" "$ctx" >/dev/null
echo "build-image: $tag $(docker image inspect --format '{{.Id}}' "$tag")"
