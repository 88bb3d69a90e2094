#!/usr/bin/env bash
# The README's first program, as a newcomer would build it: a fresh crate outside the workspace
# whose [dependencies] line is the one the README's "Installation" section gives (pointed at this
# checkout), and whose main.rs is the README's first program, both taken from the README's text so
# that they cannot drift from what it says. Builds offline (the workspace's dependencies are in
# the local Cargo cache, and the checkout's Cargo.lock pins the same versions) and runs it.
#
# Usage: .ci/scratch_crate.sh   (from anywhere; CARGO_TARGET_DIR overrides where it builds)
set -euo pipefail
checkout=$(cd "$(dirname "$0")/.." && pwd)
readme="$checkout/README.md"

# The dependency line: the only line of the first ```toml block in "## Installation" that is
# not the [dependencies] header, of the form `key = "version"`.
dep_line=$(awk '
  /^## / { in_section = ($0 == "## Installation") }
  in_section && /^```toml$/ { in_block = 1; next }
  in_block && /^```$/ { exit }
  in_block && !/^\[dependencies\]$/ && NF { print }
' "$readme")
if ! [[ $dep_line =~ ^([A-Za-z0-9_-]+)\ =\ \"([^\"]+)\"$ ]]; then
  echo "scratch_crate: expected one 'name = \"version\"' line in the README's Installation block, got: '$dep_line'" >&2
  exit 1
fi
dep_key=${BASH_REMATCH[1]}
dep_version=${BASH_REMATCH[2]}

# The first ```rust block under "## A first program".
program=$(awk '
  /^## / { in_section = ($0 == "## A first program") }
  in_section && /^```rust$/ { in_block = 1; next }
  in_block && /^```$/ { exit }
  in_block { print }
' "$readme")
if [ -z "$program" ]; then
  echo "scratch_crate: no \`\`\`rust block under '## A first program' in README.md" >&2
  exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mp-scratch-crate.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/src"
cat >"$scratch/Cargo.toml" <<EOF
[package]
name = "first-program"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
$dep_key = { path = "$checkout", version = "$dep_version" }
EOF
printf '%s\n' "$program" >"$scratch/src/main.rs"
# The versions the workspace is tested with (Cargo drops the entries this crate does not use),
# and its pinned compiler.
cp "$checkout/Cargo.lock" "$checkout/rust-toolchain.toml" "$scratch/"

echo "scratch crate in $scratch: [dependencies] $dep_key = { path = \"$checkout\", version = \"$dep_version\" }"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$checkout/target/scratch-crate}"
(cd "$scratch" && cargo build --offline --quiet && cargo run --offline --quiet)
echo "scratch_crate: the README's first program builds and runs"
