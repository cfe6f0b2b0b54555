#!/usr/bin/env bash
# Installs what wren's build, demo and tests need on a fresh Debian machine.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

# libc6-dev: the static glibc the release build links without rustup's musl target
# (scripts/build-release.sh).
# qemu-system-x86 and linux-image-amd64: the wrenvm example runtime boots microVMs (tests/tests/vm_runtime.rs).
packages=(runc crun containerd criu busybox-static libc6-dev qemu-system-x86 linux-image-amd64)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's containerd package may start a system daemon; wren's tests never use it (each test
# runs a private containerd), so it is left as it is.

# containerd 1.7 and 2.1 and Docker 26, unpacked beside the system's 1.6 (not installed).
"$(dirname "$0")"/install-newer-deps.sh

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install a Rust toolchain (rustup) first" >&2; exit 1; }
rustup component add clippy rustfmt >/dev/null 2>&1 || true
# The release build links against musl (scripts/build-release.sh, which falls back to glibc
# without it).
host=$(rustc -vV | sed -n 's/^host: //p')
[[ "$host" != *-linux-gnu ]] || rustup target add "${host%-gnu}-musl" >/dev/null 2>&1 || true
