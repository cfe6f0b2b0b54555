#!/usr/bin/env bash
# The cgroup v2 lane: boots a QEMU VM (virtme-ng, Debian's generic kernel, this machine's file
# system read-only) whose cgroup2 hierarchy holds every controller, and runs a chosen set of the
# containerd + ctr tests in it for both shims (wren, and containerd's Go shim as the reference),
# with runc and again with crun, and with a working CRIU. This host's hybrid cgroup v1 layout
# makes crun refuse to run and `criu check` fail, so the lane is where those are proven.
#
# Expects the test binaries built (scripts/test.sh builds them first). Under CI=true the lane
# must run; elsewhere a machine that cannot run it prints a SKIP line naming what is missing.
# WREN_VM_ONLY=target,target runs only those lines of the plan.
# WREN_VM_KVM=1 tries KVM (it hangs at boot under nested virtualisation, hence TCG by default).
set -euo pipefail
cd "$(dirname "$0")/.."

# How long the guest may run before the lane calls it hung (TCG is about ten times slower than
# the host; the lane takes about half of this).
guest_limit=${WREN_VM_LIMIT:-1500}
# How long one test binary may run in the guest.
binary_limit=600
strict=false
[ "${CI:-}" = true ] && strict=true

# Each line: an integration test target of the workspace, the test name filters to run in it, and
# the OCI runtime the private containerd's `ctr run`s use ("runc" leaves the shim's default).
# Filters match both `go_shim::` and `wren_shim::` tests of a scenario.
plan=(
    "containerd_lifecycle runc exec_reports_exit_code same_sandbox_shares_one_shim"
    "containerd_metrics runc metrics_match_the_go_shim_field_for_field"
    "containerd_parity runc run_tty_is_interactive exec_tty_is_interactive pause_and_resume_publish_events memory_limit_update_reaches_the_cgroup cpu_update_reaches_the_cgroup oom_is_published_once_before_exit oom_after_execs_come_and_go checkpoint_leaves_task_running"
    "containerd_checkpoint runc checkpoint"
    "runc_restore runc checkpointed_counter_is_restored_and_keeps_counting"
    "containerd_lifecycle crun run_captures_stdout sigkill_exits_137"
    "containerd_metrics crun metrics_match_the_go_shim_field_for_field"
    "containerd_parity crun run_tty_is_interactive exec_tty_is_interactive pause_and_resume_publish_events oom_is_published_once_before_exit"
)

skip_or_fail() {
    if $strict; then
        echo "vm lane: FAILED: $1" >&2
        exit 1
    fi
    echo "SKIP vm lane (cgroup v2, crun, CRIU): $1"
    exit 0
}

install_tools() {
    [ "$(id -u)" = 0 ] || return 0
    local missing=()
    for pkg in qemu-system-x86 linux-image-amd64 iptables; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
        echo "vm lane: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v vng >/dev/null || python3 -m pip install --quiet virtme-ng >/dev/null 2>&1 || true
    # pip may put it where this shell's PATH does not look (pyenv shims are rehashed lazily).
    command -v vng >/dev/null || hash -r
}

# The newest generic Debian kernel: the cloud flavour lacks the 9p modules virtme-ng needs.
pick_kernel() {
    local kernel
    kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' ! -name '*cloud*' | sort -V | tail -n 1)
    [ -n "$kernel" ] && [ -d "/lib/modules/${kernel#/boot/vmlinuz-}" ] && echo "$kernel"
}

# `<target> <executable>` for every integration test binary of the workspace.
test_executables() {
    cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["kind"] == ["test"]:
        print(msg["target"]["name"], msg["executable"])
'
}

write_guest_script() {
    local lane=$1 executables=$2
    {
        echo '#!/bin/bash'
        echo "# Runs inside the VM; everything it prints goes to $lane/guest.log."
        echo "exec >'$lane/guest.log' 2>&1 </dev/null"
        echo 'set -u'
        # /tmp is a 9p share here, which holds no unix sockets: work on the guest's tmpfs.
        echo 'export TMPDIR=/var/tmp/wren-lane CI=true WREN_TESTS_CRIU=1 RUST_BACKTRACE=1'
        echo 'mkdir -p "$TMPDIR" /run/user/0 && chmod 0700 /run/user/0'
        echo 'echo "guest: $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"'
        echo 'status=0'
        for line in "${plan[@]}"; do
            read -r target runtime filters <<<"$line"
            if [ -n "${WREN_VM_ONLY:-}" ] && [[ " ${WREN_VM_ONLY//,/ } " != *" $target "* ]]; then
                continue
            fi
            local exe
            exe=$(awk -v t="$target" '$1 == t { print $2 }' <<<"$executables")
            if [ -z "$exe" ]; then
                echo "echo 'lane: no test binary for $target'; status=1"
                continue
            fi
            local env=""
            [ "$runtime" != runc ] && env="WREN_TESTS_OCI_RUNTIME=$runtime"
            echo "echo '=== $target ($runtime): $filters'"
            # One hung binary must not cost the rest of the lane its results.
            echo "timeout -k 10 $binary_limit env $env '$exe' $filters --test-threads=2 --show-output || status=1"
        done
        echo 'echo "$status" > '"'$lane/status'"
    } >"$lane/guest.sh"
    chmod +x "$lane/guest.sh"
}

install_tools
command -v qemu-system-x86_64 >/dev/null || skip_or_fail "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
command -v vng >/dev/null || skip_or_fail "virtme-ng's vng not found (pip install virtme-ng)"
kernel=$(pick_kernel) || skip_or_fail "no generic kernel with modules in /boot (apt-get install linux-image-amd64)"

executables=$(test_executables)
[ -n "$executables" ] || skip_or_fail "no test binaries: build them with cargo test --no-run first"

lane=$(mktemp -d /tmp/wren-vm-lane.XXXXXX)
trap 'rm -rf "$lane"' EXIT
write_guest_script "$lane" "$executables"

accel=(--disable-kvm)
[ "${WREN_VM_KVM:-0}" = 1 ] && accel=()
echo "vm lane: booting $kernel (cgroup v2; ${accel[*]:-kvm}), guest limit ${guest_limit}s"
start=$(date +%s)
set +e
timeout --kill-after=20 "$guest_limit" vng --run "$kernel" "${accel[@]}" --memory 4G --cpus 2 \
    --rwdir "$lane" --exec "$lane/guest.sh" </dev/null >"$lane/console.log" 2>&1
vng_status=$?
set -e
echo "vm lane: guest ran $(($(date +%s) - start)) s"

if [ -f "$lane/guest.log" ]; then
    cat "$lane/guest.log"
fi
if [ ! -f "$lane/status" ]; then
    echo "--- VM console (last 40 lines) ---"
    tail -n 40 "$lane/console.log"
    if [ "$vng_status" = 124 ]; then
        echo "vm lane: FAILED: the guest did not finish within ${guest_limit}s" >&2
    else
        echo "vm lane: FAILED: the VM did not boot or the guest script did not finish (vng exit $vng_status)" >&2
    fi
    exit 1
fi
passed=$(grep -cE '^test .* \.\.\. ok$' "$lane/guest.log" || true)
failed=$(grep -cE '^test .* \.\.\. FAILED$' "$lane/guest.log" || true)
echo "vm-lane: $passed passed, $failed failed"
if [ "$(cat "$lane/status")" != 0 ]; then
    echo "vm lane: FAILED: tests failed in the cgroup v2 VM (above)" >&2
    exit 1
fi
echo "vm lane: passed"
