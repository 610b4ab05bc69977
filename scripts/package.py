#!/usr/bin/env python3
"""Zips the Functions app (the app root minus what .funcignore excludes), as
`func azure functionapp publish` would, keeping the handler executable. Usage:
package.py --output app.zip [--root .]"""
import argparse
import fnmatch
import os
import stat
import sys
import zipfile


def patterns(root):
    path = os.path.join(root, ".funcignore")
    with open(path) as f:
        return [line.strip().rstrip("/") for line in f if line.strip() and not line.startswith("#")]


def excluded(relative, rules):
    parts = relative.split("/")
    return any(fnmatch.fnmatch(relative, rule) or fnmatch.fnmatch(parts[0], rule) or
               any(fnmatch.fnmatch(part, rule) for part in parts) for rule in rules)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    rules = patterns(root)
    output = os.path.abspath(args.output)
    count = 0
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for directory, subdirs, files in os.walk(root):
            relative_dir = os.path.relpath(directory, root).replace(os.sep, "/")
            subdirs[:] = sorted(d for d in subdirs
                                if not excluded(d if relative_dir == "." else f"{relative_dir}/{d}", rules))
            for name in sorted(files):
                relative = name if relative_dir == "." else f"{relative_dir}/{name}"
                full = os.path.join(directory, name)
                if excluded(relative, rules) or os.path.abspath(full) == output:
                    continue
                info = zipfile.ZipInfo.from_file(full, relative)
                # Unix modes in external_attr count only when the entry says it was made on
                # Unix (create_system 3); ZipInfo.from_file says so only when run on Unix, so a
                # zip built on Windows would lose the handler's executable bit.
                info.create_system = 3
                mode = 0o755 if relative == "handler" else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                with open(full, "rb") as f:
                    archive.writestr(info, f.read(), zipfile.ZIP_DEFLATED)
                count += 1
    if not os.path.exists(os.path.join(root, "handler")):
        print("warning: no ./handler in the app root: build it and copy it there first", file=sys.stderr)
    print(f"{output}: {count} files")


if __name__ == "__main__":
    main()
