#!/usr/bin/env bash
# The test command: installs what the tests need, then checks formatting and lints and runs the
# whole suite (unit tests, real runc/crun, real containerd driven by ctr, CRI, Docker, wrenctl),
# then the containerd suites again on containerd 1.7 and 2.1, then the cgroup v2 lane in a VM
# (scripts/test-vm.sh).
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
# Every test, on Debian 12's containerd 1.6.
cargo test --workspace --no-fail-fast
# The newer releases, each with its own ctr and Go shim (the reference): the containerd + ctr
# suites and Docker on 1.7 and 2.1, and CRI on 2.1 (config version 3).
release_suites=(--test containerd_lifecycle --test containerd_io --test containerd_errors
    --test containerd_parity --test containerd_metrics --test containerd_restart --test docker)
WREN_CONTAINERD=1.7 cargo test -p wren-tests --no-fail-fast "${release_suites[@]}"
WREN_CONTAINERD=2.1 cargo test -p wren-tests --no-fail-fast "${release_suites[@]}" --test cri
# The cgroup v2 lane: the same binaries in a VM with cgroup v2, crun and a working CRIU.
scripts/test-vm.sh
# The main job (README's first command) on the release build as shipped: static, optimised.
scripts/demo.sh
