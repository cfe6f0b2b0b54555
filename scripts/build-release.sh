#!/usr/bin/env bash
# Builds the release binaries (the shim, wrenctl, the benchmark) the way wren ships them and
# prints the directory they are in: `install -m 0755 "$(scripts/build-release.sh)"/containerd-shim-wren-v2 /usr/local/bin/`.
#
# On glibc Linux they are linked statically and not position-independent, like Debian's builds
# of containerd, its Go shim and runc: one exec maps one file, with no dynamic loader, no
# shared-library lookups and no relocations to write, which makes the shim start in about two
# thirds of the time and keeps about 1 MiB less resident per shim (benches/, README). The
# shim resolves no users or hosts, so static glibc's NSS limits do not apply.
#
# The flags need an explicit --target: with it, cargo keeps them away from build scripts and
# proc-macros, which cannot be static. Binaries land in <target dir>/<host triple>/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

host=$(rustc -vV | sed -n 's/^host: //p')
if [[ "$host" == *-linux-gnu ]]; then
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static"
fi
cargo build --release --target "$host" --bins -q >&2
# Wherever cargo puts its target dir (CARGO_TARGET_DIR, build.target-dir, ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "$target_dir/$host/release"
