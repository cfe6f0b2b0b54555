#!/usr/bin/env bash
# The test command: installs what the tests need, then checks formatting and lints and runs the
# whole suite (unit tests, real runc/crun, real containerd driven by ctr, wrenctl), then the
# cgroup v2 lane in a VM (scripts/test-vm.sh).
# Needs root: integration tests create containers, mounts and cgroups. Under CI=true a test that
# would skip (for want of root) fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --quiet
# Integration tests of one package drive the binaries of others (the shim, wrenctl).
cargo build --workspace --bins --examples
if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$(git status --porcelain)" ]; then
    echo "the build changed tracked files (generated code must stay in OUT_DIR):" >&2
    git status --porcelain >&2
    exit 1
fi
cargo test --workspace --no-fail-fast
# The cgroup v2 lane: the same binaries in a VM with cgroup v2, crun and a working CRIU.
scripts/test-vm.sh
# The main job (README's first command) on the release build as shipped: static, optimised.
scripts/demo.sh
