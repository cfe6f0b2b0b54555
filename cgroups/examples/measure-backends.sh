#!/usr/bin/env bash
# Measures cgroups-rs against our readers (docs/architecture.md, "cgroups-rs, measured").
# Root only; creates a cgroup holding a real workload and removes it on exit.
#
#   measure-backends.sh build DIR   builds backend_compare and both stats_once variants into DIR
#                                   (static and not position-independent, as the shim ships)
#   measure-backends.sh run DIR     measures on this host's layout with the binaries in DIR
#   measure-backends.sh vm DIR      the same `run` inside a cgroup v2 VM (virtme-ng, as
#                                   scripts/test-vm.sh boots it); the report lands in DIR/vm.log
#   measure-backends.sh             all three, into a fresh directory under /var/tmp
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=${ROUNDS:-4000}

build() {
    local out=$1 host target_dir
    mkdir -p "$out"
    host=$(rustc -vV | sed -n 's/^host: //p')
    target_dir=$(cd "$here" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
    local cargo=(cargo build --release --target "$host" -p wren-cgroups -q)
    (cd "$here" && "${cargo[@]}" --example stats_once)
    cp "$target_dir/$host/release/examples/stats_once" "$out/stats_once-ours"
    (cd "$here" && "${cargo[@]}" --features cgroups-rs-backend --example stats_once --example backend_compare)
    cp "$target_dir/$host/release/examples/stats_once" "$out/stats_once-rs"
    cp "$target_dir/$host/release/examples/backend_compare" "$out/"
    cp "$0" "$out/measure-backends.sh"
}

# Creates the cgroup and starts the workload in it, its pid in $workload_pid. v1: one directory per
# stats controller; v2: a child of the root with every controller the root offers.
cgroup_dirs=()
workload() {
    local id=wren-bench-$$ root=/sys/fs/cgroup join dir c
    if [ "$(stat -fc %T $root)" = cgroup2fs ]; then
        for c in $(cat $root/cgroup.controllers); do echo "+$c" >$root/cgroup.subtree_control || true; done
        cgroup_dirs=("$root/$id")
    else
        for c in memory cpu cpuacct pids blkio; do cgroup_dirs+=("$root/$c/$id"); done
    fi
    mkdir "${cgroup_dirs[@]}"
    for dir in "${cgroup_dirs[@]}"; do
        [ -f "$dir/pids.max" ] && echo 200 >"$dir/pids.max"
        [ -f "$dir/memory.max" ] && echo 268435456 >"$dir/memory.max"
        [ -f "$dir/memory.limit_in_bytes" ] && echo 268435456 >"$dir/memory.limit_in_bytes"
    done
    join=$(printf 'echo $$ > %s/cgroup.procs; ' "${cgroup_dirs[@]}")
    # 8 MiB held in a shell variable, some CPU time, then asleep with one child.
    setsid sh -c "$join x=\$(head -c 8388608 /dev/zero | tr '\\0' a); i=0
        while [ \$i -lt 20000 ]; do i=\$((i+1)); done; sleep 100000 & wait" </dev/null >/dev/null 2>&1 &
    workload_pid=$!
    disown
    for _ in $(seq 100); do
        [ "$(wc -l <"${cgroup_dirs[0]}/cgroup.procs")" -ge 2 ] && break
        sleep 0.1
    done
    sleep 1
}

cleanup() {
    local dir pid
    for dir in "${cgroup_dirs[@]}"; do
        for pid in $(cat "$dir/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    done
    for dir in "${cgroup_dirs[@]}"; do
        for _ in $(seq 50); do [ -z "$(cat "$dir/cgroup.procs" 2>/dev/null)" ] && break; sleep 0.1; done
        rmdir "$dir" 2>/dev/null || true
    done
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

run() {
    local bin=$1 out=${2:-$1} pid b
    trap cleanup EXIT
    workload
    pid=$workload_pid
    echo "kernel $(uname -r), $(nproc) cpus; workload $pid in $(tr '\n' ' ' </proc/"$pid"/cgroup)"
    "$bin/backend_compare" "$pid" "$rounds"
    # Resident memory after one lookup and one read: median of 21 alternating runs.
    for _ in $(seq 21); do
        for b in ours rs; do echo "$b $("$bin/stats_once-$b" "$pid")"; done
    done >"$out/rss.txt"
    for b in ours rs; do
        strace -f -e trace=openat -o "$out/strace-$b.txt" "$bin/stats_once-$b" "$pid" >/dev/null
        echo "stats_once-$b: $(stat -c %s "$bin/stats_once-$b") bytes," \
            "median VmRSS $(awk -v b=$b '$1 == b {print $4}' "$out/rss.txt" | median) KiB," \
            "cgroupfs opens $(grep -c '"/sys/fs/cgroup/' "$out/strace-$b.txt")" \
            "($(grep '"/sys/fs/cgroup/' "$out/strace-$b.txt" | grep -c ENOENT) absent)"
    done
    cleanup
    cgroup_dirs=()
}

vm() {
    local dir=$1 kernel
    kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' ! -name '*cloud*' | sort -V | tail -n 1)
    # The guest sees this file system read-only; DIR is its one writable directory.
    printf '#!/bin/bash\nexec >%s/vm.log 2>&1 </dev/null\nROUNDS=%s %s/measure-backends.sh run %s\n' \
        "$dir" "$rounds" "$dir" "$dir" >"$dir/guest.sh"
    chmod +x "$dir/guest.sh"
    timeout 1200 vng --run "$kernel" --disable-kvm --memory 2G --cpus 2 --rwdir "$dir" \
        --exec "$dir/guest.sh" </dev/null >"$dir/console.log" 2>&1
    cat "$dir/vm.log"
}

case "${1:-all}" in
    build) build "$2" ;;
    run) run "$2" ;;
    vm) vm "$2" ;;
    all)
        dir=$(mktemp -d /var/tmp/wren-backends.XXXXXX)
        build "$dir"
        run "$dir"
        vm "$dir"
        ;;
    *) echo "usage: $0 [build DIR | run DIR | vm DIR]" >&2; exit 2 ;;
esac
