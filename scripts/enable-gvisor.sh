#!/usr/bin/env bash
# Registers gVisor's runsc with the local Docker engine, so that an agent profile can set
# `runtime: runsc` (a kernel of gVisor's between the sandbox and the host). Installs
# Debian's runsc package if runsc is missing, adds it to /etc/docker/daemon.json under
# "runtimes" (keeping every other setting) and makes dockerd reload its configuration
# (SIGHUP: running containers are not touched). Idempotent. Needs root.
#
# runsc is registered with --network=none: sandboxd's sandboxes have no network by
# default, and runsc's own network stack refuses to start on some hosts (nested ones).
# A profile that needs a network under gVisor needs runsc registered without it.
set -euo pipefail

conf="${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"

if ! command -v runsc >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc
fi
runsc_path="$(command -v runsc)"

if docker info --format '{{json .Runtimes}}' | grep -q '"runsc"'; then
  echo "enable-gvisor: the engine already has runsc"
  exit 0
fi

mkdir -p "$(dirname "$conf")"
python3 - "$conf" "$runsc_path" <<'PY'
import json, os, sys
conf, path = sys.argv[1], sys.argv[2]
d = {}
if os.path.exists(conf) and os.path.getsize(conf) > 0:
    with open(conf) as f:
        d = json.load(f)
d.setdefault("runtimes", {})["runsc"] = {"path": path, "runtimeArgs": ["--network=none"]}
tmp = conf + ".sandboxd-tmp"
with open(tmp, "w") as f:
    json.dump(d, f, indent=2)
os.replace(tmp, conf)
PY

if pids="$(pidof dockerd)"; then
  # shellcheck disable=SC2086 # one dockerd or several, each reloads
  kill -HUP $pids
else
  systemctl reload docker
fi
for _ in $(seq 50); do
  if docker info --format '{{json .Runtimes}}' | grep -q '"runsc"'; then
    echo "enable-gvisor: runsc registered ($runsc_path)"
    exit 0
  fi
  sleep 0.2
done
echo "enable-gvisor: dockerd did not pick up runsc from $conf" >&2
exit 1
