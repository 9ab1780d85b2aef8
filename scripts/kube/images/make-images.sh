#!/usr/bin/env bash
# Makes the two images the test cluster needs, as OCI archives in $1, without a registry:
#   docker.io/sandboxd/pause:1          the pod sandbox (a static C pause)
#   docker.io/library/sandboxd-sandbox:latest   the sandbox image of images/sandbox: Debian's
#       busybox-static, the same files, user and settings as scripts/build-image.sh builds for Docker.
set -euo pipefail
out=${1:?usage: make-images.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "make-images: $busybox must be a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/pause"
gcc -static -Os -s -o "$work/pause/pause" "$here/pause.c"
python3 "$here/mkimage.py" "$work/pause" docker.io/sandboxd/pause:1 "$out/pause.tar" '{"Entrypoint":["/pause"]}' >/dev/null

# images/sandbox/Dockerfile, file for file.
s=$work/sandbox
mkdir -p "$s/bin" "$s/sbin" "$s/usr/bin" "$s/usr/sbin" "$s/etc" "$s/tmp" "$s/workspace" "$s/root"
cp "$busybox" "$s/bin/busybox" && chmod 0755 "$s/bin/busybox"
chroot "$s" /bin/busybox --install -s
printf 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$s/etc/passwd"
printf 'root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n' > "$s/etc/group"
chmod 1777 "$s/tmp"; chmod 0700 "$s/root"; chown 1000:1000 "$s/workspace"
python3 "$here/mkimage.py" "$s" docker.io/library/sandboxd-sandbox:latest "$out/sandbox.tar" \
  '{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin","HOME=/workspace"],"WorkingDir":"/workspace","User":"1000:1000","Cmd":["sleep","infinity"]}' >/dev/null
echo "make-images: $out/pause.tar $out/sandbox.tar"
