#!/usr/bin/env bash
# Builds the release binaries (the shim, wrenctl, the benchmark) the way wren ships them and
# prints the directory they are in: `install -m 0755 "$(scripts/build-release.sh)"/containerd-shim-wren-v2 /usr/local/bin/`.
#
# They are linked statically against musl and are not position-independent: one exec maps one
# file, with no dynamic loader, no shared-library lookups and no relocations to write. musl
# rather than glibc, because static glibc spends about 0.45 ms of every exec on this project's
# machine (a VM) probing the CPU's caches with cpuid, each a trap to the hypervisor, before
# main runs; and because musl's allocator keeps an idle shim a quarter smaller without the
# glibc tunables the daemon otherwise needs (shim/src/memory.rs). Measured side by side:
# `start` to the first answer 0.75-0.8x, idle PSS 0.72x, the rest unchanged (benches/).
# The shim resolves no users or hosts, so a static libc's NSS limits do not apply.
#
# Without the musl target (a toolchain not managed by rustup), the binaries are static glibc
# ones instead, built the same way.
#
# The flags need an explicit --target: with it, cargo keeps them away from build scripts and
# proc-macros, which cannot be static. Binaries land in <target dir>/<triple>/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

host=$(rustc -vV | sed -n 's/^host: //p')
target=$host
case "$host" in
    *-linux-gnu)
        musl=${host%-gnu}-musl
        if rustup target list --installed 2>/dev/null | grep -qx "$musl" \
            || rustup target add "$musl" >/dev/null 2>&1; then
            target=$musl
        else
            echo "build-release: no $musl target; building static glibc binaries" >&2
        fi
        export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static"
        ;;
esac
cargo build --release --target "$target" --bins -q >&2
# Wherever cargo puts its target dir (CARGO_TARGET_DIR, build.target-dir, ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "$target_dir/$target/release"
