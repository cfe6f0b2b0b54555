#!/usr/bin/env bash
# The main job on a fresh machine: build wren, prepare a default bundle (busybox-static), and run a
# container through containerd-shim-wren-v2 with wrenctl, printing its output.
# Usage: scripts/demo.sh [command...]   (default: a greeting from inside the container)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
release=$(scripts/build-release.sh)

rootfs=$(mktemp -d /tmp/wren-demo.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp,etc}
cp /bin/busybox "$rootfs/bin/busybox"
# Relative links: an absolute one would point at the host's path, not the container's.
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"

if [ $# -eq 0 ]; then
    set -- sh -c 'echo "hello from a container run by containerd-shim-wren-v2 (pid $$, host $(hostname))"'
fi
exec "$release/wrenctl" run --rm --rootfs "$rootfs" -- "$@"
