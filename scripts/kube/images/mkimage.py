#!/usr/bin/env python3
"""Make a single-layer OCI image archive from a folder, for `ctr images import` (no registry).
Files keep their numeric owner and mode; names, times and owner names are normalised.
usage: mkimage.py ROOTFS NAME OUT.tar '{"Entrypoint":[...],"Cmd":[...],"User":"..."}'"""
import hashlib, io, json, os, sys, tarfile

rootfs, name, out, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

def blob(t, data):
    d = hashlib.sha256(data).hexdigest()
    i = tarfile.TarInfo("blobs/sha256/" + d); i.size = len(data); i.mode = 0o644
    t.addfile(i, io.BytesIO(data))
    return "sha256:" + d

layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as lt:
    for base, dirs, files in os.walk(rootfs):
        dirs.sort()
        for n in sorted(dirs) + sorted(files):
            p = os.path.join(base, n)
            ti = lt.gettarinfo(p, os.path.relpath(p, rootfs))
            ti.uname = ti.gname = ""; ti.mtime = 0
            if ti.isfile():
                with open(p, "rb") as f: lt.addfile(ti, f)
            else:
                lt.addfile(ti)
layer = layer.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
config = {"architecture": "amd64", "os": "linux",
          "config": dict({"Env": ["PATH=/bin"]}, **cfg),
          "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
with tarfile.open(out, "w") as t:
    cdata = json.dumps(config).encode()
    cd = blob(t, cdata); ld = blob(t, layer)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cdata)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}]}).encode()
    md = blob(t, man)
    idx = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": len(man), "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}).encode()
    for fn, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", idx)):
        i = tarfile.TarInfo(fn); i.size = len(data); i.mode = 0o644; t.addfile(i, io.BytesIO(data))
print(name, md, len(layer), "bytes layer")
