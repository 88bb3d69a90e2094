#!/usr/bin/env python3
"""Fails if a dependency (normal or build, not dev) of the workspace declares a rust-version newer
than the workspace's own: `cargo metadata` on stdin."""
import json
import sys


def version(text):
    return tuple(int(part) for part in text.split("."))


meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
ours = {packages[i]["rust_version"] for i in meta["workspace_members"]}
if len(ours) != 1:
    sys.exit(f"the workspace crates disagree on rust-version: {sorted(ours)}")
msrv = ours.pop()
seen, stack, too_new = set(), list(meta["workspace_members"]), []
while stack:
    node = stack.pop()
    if node in seen:
        continue
    seen.add(node)
    for dep in nodes[node]["deps"]:
        if any(kind["kind"] in (None, "build") for kind in dep["dep_kinds"]):
            stack.append(dep["pkg"])
for node in sorted(seen):
    package = packages[node]
    needs = package.get("rust_version")
    if needs and version(needs) > version(msrv):
        too_new.append(f"{package['name']} {package['version']} needs Rust {needs}")
if too_new:
    sys.exit(f"dependencies newer than rust-version {msrv}: " + "; ".join(too_new))
print(f"every dependency builds with Rust {msrv} (rust-version)")
