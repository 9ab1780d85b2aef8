#!/usr/bin/env bash
# Builds the binaries of a single-node test cluster from the Go module proxy alone:
#   etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubelet, kubectl
#   (k8s.io/kubernetes through a wrapper module) and gVisor's runsc + containerd-shim-runsc-v1.
# containerd, runc and the CNI plugins come from Debian (see up.sh).
#
# The binaries are cached OUTSIDE the clone, keyed by version, so a second run builds nothing:
#   $SANDBOXD_KUBE_CACHE (default /var/cache/sandboxd-kube)/bin/<version key>/
# A cold build takes about 8-10 minutes on 2 cores; a warm one, a few milliseconds.
# Prints the bin folder on its last line. Arguments pick parts (k8s, etcd, gvisor; default
# all), e.g. to build the parts in parallel: build.sh k8s & build.sh etcd gvisor & wait.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

K8S=1.34.4
ETCD=3.6.4
GVISOR=v0.0.0-20260905035102-160fafc42237   # gvisor.dev/gvisor, go branch
cache=${SANDBOXD_KUBE_CACHE:-/var/cache/sandboxd-kube}
bin=$cache/bin/k8s-v$K8S-etcd-v$ETCD-gvisor-${GVISOR##*-}
src=$cache/src
logs=$cache/logs

export GOCACHE=$cache/gocache GOFLAGS=-mod=mod CGO_ENABLED=0
export GOTOOLCHAIN=local
export PATH=$PATH:/usr/local/go/bin
mkdir -p "$bin" "$src" "$logs"

parts=${*:-k8s etcd gvisor}
part() { [[ " $parts " == *" $1 "* ]]; }
want() { [ ! -x "$bin/$1" ]; }
timed() { # timed NAME CMD...: build, record how long it took
  local name=$1 s; shift
  s=$(date +%s)
  "$@"
  echo "$(date -u +%FT%TZ) $name $(( $(date +%s) - s ))s" >> "$logs/build-times.txt"
  echo "build: $name in $(( $(date +%s) - s ))s" >&2
}

# --- Kubernetes, through a wrapper module that pins every staging module to the same release ---
kcmds=(kubelet kube-apiserver kube-scheduler kube-controller-manager kubectl)
need=()
for c in "${kcmds[@]}"; do part k8s && want "$c" && need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  d=$src/k8s-v$K8S && mkdir -p "$d" && cd "$d"
  if [ ! -f go.sum ]; then
    go mod download k8s.io/kubernetes@v$K8S
    modfile=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S.mod
    {
      printf 'module sandboxd.local/kube\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S"
      grep '=> ./staging' "$modfile" | awk -v v="v0.${K8S#1.}" '{print "\t"$1" => "$1" "v}'
      printf ')\n'
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport (\n' > tools.go
    for c in "${kcmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c" >> tools.go; done
    printf ')\n' >> tools.go
    go mod tidy
  fi
  minor=$(echo "$K8S" | cut -d. -f2)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=v$K8S -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  for c in "${need[@]}"; do
    timed "$c" go build -trimpath -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$bin/$c.tmp" "$bin/$c"
  done
fi

# --- etcd: its server's main in a three-line module ---
if part etcd && want etcd; then
  d=$src/etcd-v$ETCD && mkdir -p "$d" && cd "$d"
  if [ ! -f go.sum ]; then
    printf 'module sandboxd.local/etcd\n\ngo 1.24.0\n' > go.mod
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
    go get go.etcd.io/etcd/server/v3@v$ETCD
    go mod tidy
  fi
  timed etcd go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .
  mv "$bin/etcd.tmp" "$bin/etcd"
fi

# --- gVisor: runsc and its containerd shim. The shim is patched (patches/): without
# CAP_SYS_RESOURCE it cannot lower its own oom_score_adj, which must not fail every pod. ---
if part gvisor && { want runsc || want containerd-shim-runsc-v1.real; }; then
  d=$src/gvisor-${GVISOR##*-} && mkdir -p "$d" && cd "$d"
  if [ ! -f go.sum ]; then
    go mod download gvisor.dev/gvisor@$GVISOR
    rm -rf gvisor-src
    cp -r "$(go env GOMODCACHE)/gvisor.dev/gvisor@$GVISOR" gvisor-src
    chmod -R u+w gvisor-src
    patch -p1 -d gvisor-src < "$here/patches/gvisor-shim-oom-score.patch"
    printf 'module sandboxd.local/gvisor\n\ngo 1.24.0\n\nrequire gvisor.dev/gvisor %s\n\nreplace gvisor.dev/gvisor => ./gvisor-src\n' "$GVISOR" > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "gvisor.dev/gvisor/runsc"\n\t_ "gvisor.dev/gvisor/shim"\n)\n' > tools.go
    go mod tidy
  fi
  if want runsc; then
    timed runsc go build -trimpath -ldflags "-s -w" -o "$bin/runsc.tmp" gvisor.dev/gvisor/runsc
    mv "$bin/runsc.tmp" "$bin/runsc"
  fi
  if want containerd-shim-runsc-v1.real; then
    timed containerd-shim-runsc-v1 go build -trimpath -ldflags "-s -w" -o "$bin/containerd-shim-runsc-v1.real.tmp" gvisor.dev/gvisor/shim
    mv "$bin/containerd-shim-runsc-v1.real.tmp" "$bin/containerd-shim-runsc-v1.real"
  fi
fi

echo "$bin"
