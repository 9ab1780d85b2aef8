#!/usr/bin/env bash
# Stops what up.sh started, by PID only, and undoes its host changes.
#   scripts/kube/down.sh           stop; keep the state (etcd data, images, volumes)
#   scripts/kube/down.sh --purge   also delete the state (not the cached binaries)
set -uo pipefail
S=${SANDBOXD_KUBE_STATE:-/var/lib/sandboxd-kube}
P=$S/pids
SOCK=$S/containerd/containerd.sock
alive() { [ -f "$P/$1.pid" ] && kill -0 "$(cat "$P/$1.pid")" 2>/dev/null; }
stop() { # stop NAME: SIGTERM by PID, up to 15 s, then SIGKILL
  alive "$1" || { rm -f "$P/$1.pid"; return 0; }
  local pid
  pid=$(cat "$P/$1.pid")
  kill "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$P/$1.pid"
  echo "down: stopped $1 ($pid)"
}
kubectl=$(ls -d /var/cache/sandboxd-kube/bin/*/kubectl "${SANDBOXD_KUBE_CACHE:-/nonexistent}"/bin/*/kubectl 2>/dev/null | head -1)

# 1. let the kubelet tear the pods down (CNI DEL, sandbox removal) while everything runs
if [ -n "$kubectl" ] && alive kube-apiserver && alive kubelet; then
  "$kubectl" --kubeconfig="$S/admin.kubeconfig" delete pods --all --all-namespaces \
    --grace-period=0 --wait=true --timeout=60s >/dev/null 2>&1
fi
stop provisioner
stop kubelet
stop kube-scheduler
stop kube-controller-manager
# 2. whatever containers remain: kill their tasks through our containerd
if [ -S "$SOCK" ] && alive containerd; then
  CTR="ctr -a $SOCK -n k8s.io"
  for c in $($CTR tasks ls -q 2>/dev/null); do $CTR tasks kill -s SIGKILL "$c" 2>/dev/null; done
  sleep 1
  for c in $($CTR tasks ls -q 2>/dev/null); do $CTR tasks delete -f "$c" 2>/dev/null; done
fi
stop kube-apiserver
stop etcd
stop containerd
# 3. shims and gVisor sandboxes of OUR containerd only (Docker's use /var/run/docker/...)
for pid in $(pgrep -f containerd-shim 2>/dev/null); do
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-address $SOCK" && kill -9 "$pid" && echo "down: killed shim $pid"
done
for pid in $(pgrep -f runsc 2>/dev/null); do
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--root=$S/containerd/runsc\|--root $S/containerd/runsc" &&
    kill -9 "$pid" && echo "down: killed runsc $pid"
done
# shim sockets live in containerd 1.6's hard-coded /run/containerd/s/: remove the ones ours left
for f in "$S"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
  [ -f "$f" ] || continue
  a=$(sed 's|^unix://||' "$f")
  [ -S "$a" ] && rm -f "$a"
done
# 4. mounts under the state folder (container roots, netns, volumes, the kubelet's bind mount)
for m in $(awk -v r="$S/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null; done
mountpoint -q "$S/kubelet" && umount -l "$S/kubelet"
# 5. network: the bridge (veths go with the pods' namespaces), libcni's cache of our network
ip link show sbxkube0 >/dev/null 2>&1 && ip link del sbxkube0 && echo "down: deleted bridge sbxkube0"
rm -f /var/lib/cni/results/sandboxd-kube-* 2>/dev/null
rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null # only if empty: not configurable in containerd 1.6
# 6. cgroups (depth first)
for c in /sys/fs/cgroup/*/sandboxd-kube; do
  [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done
ls -d /sys/fs/cgroup/*/sandboxd-kube 2>/dev/null && echo "down: WARNING: cgroups left (processes still inside?)"
if [ "${1:-}" = --purge ]; then
  rm -rf "$S"
  echo "down: purged $S"
fi
echo down
