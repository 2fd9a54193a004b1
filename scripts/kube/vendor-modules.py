#!/usr/bin/env python3
"""Rewrite a pre-Go-1.17 vendor/modules.txt so Go >= 1.17 accepts it with -mod=vendor.

The old layout lists some package lines under the wrong header (after a replacement-only
`# path => ...` line). Go now requires each package under its module's versioned header.
Every package is moved under the versioned module whose path is its longest prefix.
Optionally bumps one module's version (argv[3] path, argv[4] version) everywhere.
"""
import sys


def owner(package, modules):
    best = None
    for path in modules:
        if package == path or package.startswith(path + "/"):
            if best is None or len(path) > len(best):
                best = path
    return best


def main():
    src, dst = sys.argv[1], sys.argv[2]
    bump = (sys.argv[3], sys.argv[4]) if len(sys.argv) == 5 else None
    versioned, order, replace_only, packages = {}, [], [], []
    last = None
    for line in open(src).read().splitlines():
        if line.startswith("## "):
            if last is not None:
                versioned[last]["notes"].append(line)
        elif line.startswith("# "):
            fields = line[2:].split()
            if len(fields) >= 2 and fields[1] != "=>":
                last = fields[0]
                versioned[last] = {"header": line, "notes": [], "packages": []}
                order.append(last)
            else:
                last = None
                replace_only.append(line)
        elif line.strip():
            packages.append(line)
    for package in packages:
        path = owner(package, versioned)
        if path is None:
            sys.exit(f"no module owns vendored package {package}")
        versioned[path]["packages"].append(package)
    out = []
    for path in order:
        entry = versioned[path]
        out.append(entry["header"])
        out.extend(entry["notes"])
        out.extend(entry["packages"])
    out.extend(replace_only)
    text = "\n".join(out) + "\n"
    if bump:
        path, version = bump
        text = "\n".join(rewrite_version(l, path, version) for l in text.splitlines()) + "\n"
    open(dst, "w").write(text)


def rewrite_version(line, path, version):
    fields = line.split()
    for i, field in enumerate(fields[:-1]):
        if field == path and fields[i + 1].startswith("v"):
            fields[i + 1] = version
    return " ".join(fields) if fields != line.split() else line


if __name__ == "__main__":
    main()
