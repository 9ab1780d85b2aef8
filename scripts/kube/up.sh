#!/usr/bin/env bash
# Starts a real single-node Kubernetes on this machine, for sandboxd's tests and a local try-out:
#   etcd, kube-apiserver (RBAC), kube-controller-manager, kube-scheduler, kubelet (built by
#   build.sh), Debian's containerd as a separate CRI daemon (own root, state and socket;
#   Docker's containerd is never touched), Debian's CNI plugins, a `gvisor` RuntimeClass, the
#   sandbox and pause images imported without a registry, and a small provisioner that gives
#   every PersistentVolumeClaim of the default StorageClass `sandboxd-local` a local volume.
#
#   scripts/kube/up.sh            start (a second call while it runs does nothing)
#   scripts/kube/down.sh [--purge]   stop by PID, undo the host changes
#
# Host changes: cgroups /sandboxd-kube, the bridge sbxkube0 (10.88.91.1/24; pods get no
# default route), shim sockets in /run/containerd/s/. No sysctl, iptables, /etc or /var/log
# change: the kubelet runs in a private mount namespace that shows it the values it wants.
# Prints `export KUBECONFIG=...` on its last line. Logs and PIDs: $SANDBOXD_KUBE_STATE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
S=${SANDBOXD_KUBE_STATE:-/var/lib/sandboxd-kube}
NODE=localhost   # the apiserver dials the node by this Hostname address: 127.0.0.1
APIPORT=${SANDBOXD_KUBE_API_PORT:-16643}
ETCDPORT=16679
export PATH=$PATH:/usr/local/go/bin

P=$S/pids L=$S/logs
export SANDBOXD_KUBE_LOGS=$L
mkdir -p "$P" "$L" "$S"/{pki,etcd,cni/net.d,cni/ipam,pod-logs,varlog,fake-sysctl,containerd,conf,images,kubelet,volumes}

alive() { [ -f "$P/$1.pid" ] && kill -0 "$(cat "$P/$1.pid")" 2>/dev/null; }
if alive kube-apiserver && alive kubelet && alive containerd; then
  echo "up: already running"
  echo "export KUBECONFIG=$S/admin.kubeconfig"
  exit 0
fi

B=$("$here/build.sh" | tail -1)
export PATH=$B:$PATH
kc() { "$B/kubectl" --kubeconfig="$S/admin.kubeconfig" "$@"; }

t0=$(date +%s%N)
ts() { echo "up: $(( ($(date +%s%N) - t0) / 1000000 )) ms: $*" | tee -a "$L/up-times.txt" >&2; }
wait_for() { # wait_for SECONDS WHAT CMD...
  local n=$(( $1 * 10 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    n=$((n - 1))
    if [ $n -le 0 ]; then echo "up: timeout waiting for $what (logs: $L)" >&2; exit 1; fi
    sleep 0.1
  done
  ts "$what"
}
start() { # start NAME CMD...: in the background, PID in $P/NAME.pid, output in $L/NAME.log
  local name=$1; shift
  alive "$name" && return 0
  nohup "$@" >"$L/$name.log" 2>&1 &
  echo $! >"$P/$name.pid"
}
render() { sed -e "s|@STATE@|$S|g" -e "s|@BIN@|$B|g" "$here/conf/$1" >"$2"; }

# --- CNI plugins: Debian's containernetworking-plugins, unpacked (not installed) ---
if [ ! -x "$S/cni-root/usr/lib/cni/bridge" ]; then
  d=$(mktemp -d)
  (cd "$d" && { apt-get download containernetworking-plugins 2>/dev/null ||
    { apt-get update -qq && apt-get download containernetworking-plugins; }; })
  dpkg -x "$d"/containernetworking-plugins_*.deb "$S/cni-root"
  rm -rf "$d"
fi

# --- images, keyed by what they are made of ---
key=$(cat "$here/images/"* /bin/busybox | sha256sum | cut -c1-16)
if [ ! -f "$S/images/$key" ]; then
  "$here/images/make-images.sh" "$S/images" >/dev/null
  rm -f "$S/images/"*.key 2>/dev/null || true
  touch "$S/images/$key"
fi

# --- PKI, tokens, kubeconfigs ---
if [ ! -f "$S/pki/tokens.csv" ]; then
  (
    cd "$S/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=sandboxd-kube-ca 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out kubelet-client.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    : >tokens.csv
    user() { # user FILE NAME [GROUP]: a token and a kubeconfig FILE.kubeconfig
      local tok
      tok=$(openssl rand -hex 16)
      if [ -n "${3:-}" ]; then printf '%s,%s,%s,"%s"\n' "$tok" "$2" "$2" "$3"; else printf '%s,%s,%s\n' "$tok" "$2" "$2"; fi >>tokens.csv
      cat >"$S/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: sandboxd-kube, cluster: {server: "https://127.0.0.1:$APIPORT", certificate-authority: "$S/pki/apiserver/apiserver.crt"}}]
users: [{name: $1, user: {token: "$tok"}}]
contexts: [{name: sandboxd-kube, context: {cluster: sandboxd-kube, user: $1, namespace: default}}]
current-context: sandboxd-kube
EOF
      chmod 600 "$S/$1.kubeconfig"
    }
    # The scheduler and the controller-manager get exactly their bootstrap roles.
    user admin sandboxd-kube-admin system:masters
    user node "system:node:$NODE" system:nodes
    user scheduler system:kube-scheduler
    user controller-manager system:kube-controller-manager
    user provisioner sandboxd-kube-provisioner system:masters
  )
fi
ts "pki, tokens, kubeconfigs"

# --- etcd ---
start etcd "$B/etcd" --name sandboxd-kube --data-dir "$S/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCDPORT" --advertise-client-urls "http://127.0.0.1:$ETCDPORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCDPORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCDPORT + 1))" \
  --initial-cluster "sandboxd-kube=http://127.0.0.1:$((ETCDPORT + 1))" --unsafe-no-fsync --log-level warn

# --- containerd (its own; Docker's is untouched) ---
render containerd.toml "$S/conf/containerd.toml"
render runsc.toml "$S/conf/runsc.toml"
render 10-sandboxd.conflist "$S/cni/net.d/10-sandboxd.conflist"
if [ ! -x "$B/containerd-shim-runsc-v1" ] || ! cmp -s "$here/conf/containerd-shim-runsc-v1" "$B/containerd-shim-runsc-v1"; then
  cp "$here/conf/containerd-shim-runsc-v1" "$B/containerd-shim-runsc-v1"
fi
start containerd /usr/bin/containerd --config "$S/conf/containerd.toml"
wait_for 30 "etcd healthy" curl -sf "http://127.0.0.1:$ETCDPORT/health"

# --- kube-apiserver: RBAC (and the Node authorizer for the kubelet) ---
start kube-apiserver "$B/kube-apiserver" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APIPORT" \
  --etcd-servers="http://127.0.0.1:$ETCDPORT" --cert-dir="$S/pki/apiserver" \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$S/pki/sa.key" \
  --service-account-signing-key-file="$S/pki/sa.key" --service-cluster-ip-range=10.97.0.0/16 \
  --token-auth-file="$S/pki/tokens.csv" --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction --endpoint-reconciler-type=none \
  --kubelet-client-certificate="$S/pki/kubelet-client.crt" --kubelet-client-key="$S/pki/kubelet-client.key" \
  --kubelet-preferred-address-types=Hostname,InternalIP

wait_for 30 "containerd up" ctr -a "$S/containerd/containerd.sock" version
for img in pause sandbox; do ctr -a "$S/containerd/containerd.sock" -n k8s.io images import "$S/images/$img.tar" >/dev/null; done
ts "images imported"
wait_for 60 "apiserver ready" kc get --raw /readyz

# --- controller-manager (service accounts, PV binding, GC, namespaces) and scheduler ---
start kube-controller-manager "$B/kube-controller-manager" \
  --kubeconfig="$S/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$S/controller-manager.kubeconfig" --authorization-kubeconfig="$S/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=16657 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$S/pki/sa.key" --root-ca-file="$S/pki/apiserver/apiserver.crt" \
  --service-cluster-ip-range=10.97.0.0/16 --controllers='*,-cloud-node-lifecycle-controller'
start kube-scheduler "$B/kube-scheduler" \
  --kubeconfig="$S/scheduler.kubeconfig" \
  --authentication-kubeconfig="$S/scheduler.kubeconfig" --authorization-kubeconfig="$S/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=16659 --leader-elect=false

# --- kubelet, in a mount namespace of its own ---
for c in /sys/fs/cgroup/*/; do
  [ -e "$c/cgroup.procs" ] || continue
  case $c in */unified/) continue ;; esac
  mkdir -p "$c/sandboxd-kube"
  if [ -e "$c/cpuset.cpus" ]; then
    cat "$c/cpuset.cpus" >"$c/sandboxd-kube/cpuset.cpus"
    cat "$c/cpuset.mems" >"$c/sandboxd-kube/cpuset.mems"
  fi
done
# The kubelet's root is a shared mount: volume mounts it makes in its namespace reach containerd.
mountpoint -q "$S/kubelet" || { mount --bind "$S/kubelet" "$S/kubelet" && mount --make-shared "$S/kubelet"; }
printf 1 >"$S/fake-sysctl/overcommit_memory"; printf 0 >"$S/fake-sysctl/panic_on_oom"
printf 10 >"$S/fake-sysctl/panic"; printf 1 >"$S/fake-sysctl/panic_on_oops"
printf 1000000 >"$S/fake-sysctl/root_maxkeys"; printf 25000000 >"$S/fake-sysctl/root_maxbytes"
render kubelet.yaml "$S/conf/kubelet.yaml"
cat >"$S/conf/kubelet-ns.sh" <<EOF
#!/bin/sh
# The kubelet insists on these sysctls (it would write them, or refuse to start with
# protectKernelDefaults): shown to it only, in this mount namespace. So is /var/log.
set -e
F=$S/fake-sysctl
mount --bind \$F/overcommit_memory /proc/sys/vm/overcommit_memory
mount --bind \$F/panic_on_oom /proc/sys/vm/panic_on_oom
mount --bind \$F/panic /proc/sys/kernel/panic
mount --bind \$F/panic_on_oops /proc/sys/kernel/panic_on_oops
mount --bind \$F/root_maxkeys /proc/sys/kernel/keys/root_maxkeys
mount --bind \$F/root_maxbytes /proc/sys/kernel/keys/root_maxbytes
mount --bind $S/varlog /var/log
exec $B/kubelet --config=$S/conf/kubelet.yaml --kubeconfig=$S/node.kubeconfig --hostname-override=$NODE \\
  --root-dir=$S/kubelet --v=1
EOF
chmod +x "$S/conf/kubelet-ns.sh"
start kubelet unshare --mount --propagation unchanged "$S/conf/kubelet-ns.sh"

# --- the local volume provisioner (this repository's scripts/kube/provisioner) ---
if [ ! -x "$S/provisioner" ] || [ -n "$(find "$here/provisioner" -newer "$S/provisioner" -name '*.go')" ]; then
  (cd "$repo" && CGO_ENABLED=0 go build -o "$S/provisioner" ./scripts/kube/provisioner)
fi
start provisioner "$S/provisioner" --kubeconfig="$S/provisioner.kubeconfig" --dir="$S/volumes" --node="$NODE"

node_ready() { [ "$(kc get node $NODE -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for 120 "node $NODE Ready" node_ready

kc apply -f - >/dev/null <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: sandboxd-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: sandboxd.dev/local
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
wait_for 60 "default service account" kc -n default get serviceaccount default
ts "ready"
cat >&2 <<EOF
up: node $NODE ready; kubectl is $B/kubectl; images docker.io/library/sandboxd-sandbox:latest (pods: imagePullPolicy IfNotPresent)
EOF
echo "export KUBECONFIG=$S/admin.kubeconfig"
