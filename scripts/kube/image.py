#!/usr/bin/env python3
"""Write a one-layer image as a docker-archive tarball (what `ctr images import` reads).

Usage: image.py OUT.tar NAME:TAG [--entrypoint JSON] [--cmd JSON] [--env K=V]...
                [--file SRC:DST]... [--elf SRC:DST]... [--link TARGET:DST]...

--file copies a file or a directory tree; --elf copies an executable and every shared library
`ldd` says it needs (with the dynamic loader), at their own paths; --link makes a symlink.
No registry is reachable on these machines, so the lab builds its images this way.
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time


def ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    if out.returncode != 0:
        return []  # static
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


class Layer:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()
        self.paths = set()

    def _parents(self, dst):
        parts = dst.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                self.tar.addfile(info)
                self.dirs.add(d)

    def file(self, src, dst):
        dst = dst.strip("/")
        if dst in self.paths:
            return
        self._parents("/" + dst)
        real = os.path.realpath(src)
        info = self.tar.gettarinfo(real, arcname=dst)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        with open(real, "rb") as f:
            self.tar.addfile(info, f)
        self.paths.add(dst)

    def tree(self, src, dst):
        if os.path.isdir(src):
            for root, _, files in os.walk(src):
                for name in sorted(files):
                    path = os.path.join(root, name)
                    self.file(path, os.path.join(dst, os.path.relpath(path, src)))
        else:
            self.file(src, dst)

    def link(self, target, dst):
        dst = dst.strip("/")
        if dst in self.paths:
            return
        self._parents("/" + dst)
        info = tarfile.TarInfo(dst)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        self.tar.addfile(info)
        self.paths.add(dst)

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("--entrypoint", type=json.loads)
    ap.add_argument("--cmd", type=json.loads)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--elf", action="append", default=[])
    ap.add_argument("--link", action="append", default=[])
    a = ap.parse_args()

    layer = Layer()
    for spec in a.elf:
        src, dst = spec.split(":", 1)
        layer.file(src, dst)
        for lib in ldd(src):
            layer.file(lib, lib)
    for spec in a.file:
        src, dst = spec.split(":", 1)
        if not os.path.exists(src):
            sys.exit(f"image.py: {src} does not exist")
        layer.tree(src, dst)
    for spec in a.link:
        target, dst = spec.split(":", 1)
        layer.link(target, dst)
    data = layer.bytes()
    diff = "sha256:" + hashlib.sha256(data).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
        "config": {
            "Entrypoint": a.entrypoint,
            "Cmd": a.cmd,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [a.name], "Layers": [layer_name]}]
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w") as out:
        for name, blob in [
            (layer_name, data),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            out.addfile(info, io.BytesIO(blob))
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
