#!/usr/bin/env bash
# Fetches the newer containerd and Docker releases wren's tests run against, beside the
# system's: containerd 1.7 and Docker 26 from Debian trixie, containerd 2.1 from sid. Each
# package is unpacked with `dpkg-deb -x` into its own versioned directory under $WREN_DEPS_DIR
# (default /opt/wren-deps), with a stable link per series for the tests to find:
#
#   containerd-1.7 -> containerd-1.7.24   usr/bin/{containerd,ctr,containerd-shim-runc-v2}
#   containerd-2.1 -> containerd-2.1.9    the same
#   docker-26      -> docker-26.1.5       usr/sbin/dockerd, usr/bin/{docker,docker-init}
#
# Nothing is installed into the system: Debian 12's containerd 1.6 stays the default, and no
# daemon is started. apt runs with a private state, cache and sources list, so it neither
# sees nor takes the system's apt lock; the mirror is the one the machine's own sources use.
# Idempotent: when every link resolves, it returns without touching the network.
set -euo pipefail

deps_dir=${WREN_DEPS_DIR:-/opt/wren-deps}

# <link name> <suite> <version prefix the suite must offer> <packages...>
wanted=(
    "containerd-1.7 trixie 1.7. containerd"
    "containerd-2.1 sid 2.1. containerd"
    "docker-26 trixie 26. docker.io docker-cli tini"
)

all_present() {
    local entry link
    for entry in "${wanted[@]}"; do
        read -r link _ <<<"$entry"
        [ -d "$deps_dir/$link/usr" ] || return 1
    done
}
all_present && exit 0

mkdir -p "$deps_dir"
# Several checkouts on one machine may run this at once; they share $deps_dir.
exec 9>"$deps_dir/.lock"
flock 9
all_present && exit 0

# The first Debian (non-security) mirror of the machine's apt sources, deb822 or one-line.
mirror_uri() {
    local uri
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' | grep -v security | head -n1 || true)
    fi
    [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt/sources*" >&2; return 1; }
    echo "$uri"
}
mirror=$(mirror_uri)

# apt-get or apt-cache with a private state per suite: `update` there takes only its own lock.
private_apt() {
    local tool=$1 suite=$2
    shift 2
    local base="$deps_dir/.apt/$suite"
    "$tool" -q \
        -o Dir::State="$base/state" -o Dir::Cache="$base/cache" \
        -o Dir::Etc::SourceList="$base/sources.list" -o Dir::Etc::SourceParts="$base/empty" \
        -o Dir::Etc::Preferences="$base/empty/none" -o Dir::Etc::PreferencesParts="$base/empty" \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
        -o APT::Sandbox::User=root \
        "$@"
}

prepare_suite() {
    local suite=$1 base="$deps_dir/.apt/$1"
    [ -f "$base/state/lists/.updated" ] && return 0
    mkdir -p "$base/state/lists/partial" "$base/cache/archives/partial" "$base/empty"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
        >"$base/sources.list"
    private_apt apt-get "$suite" update >/dev/null
    touch "$base/state/lists/.updated"
}

# Downloads <packages> from <suite>, checks the first one's version starts with <prefix>,
# unpacks them all into <link>-<version> and points <link> at it.
fetch_unpack() {
    local link=$1 suite=$2 prefix=$3
    shift 3
    [ -d "$deps_dir/$link/usr" ] && return 0
    prepare_suite "$suite"
    local version
    version=$(private_apt apt-cache "$suite" policy "$1" | awk '/Candidate:/ { print $2 }')
    version=${version#*:}
    case "$version" in
    "$prefix"*) ;;
    *)
        echo "$suite offers $1 '$version', not $prefix*: update install-newer-deps.sh" >&2
        return 1
        ;;
    esac
    version=${version%%[~+-]*}
    local series=${link%-*}
    local target="$series-$version" tmp
    tmp=$(mktemp -d "$deps_dir/.unpack.XXXXXX")
    (cd "$tmp" && private_apt apt-get "$suite" download "$@" >/dev/null)
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$tmp/root"
    done
    rm -rf "${deps_dir:?}/$target"
    mv "$tmp/root" "$deps_dir/$target"
    rm -rf "$tmp"
    ln -sfn "$target" "$deps_dir/$link"
    echo "unpacked $* ($suite) into $deps_dir/$target"
}

for entry in "${wanted[@]}"; do
    # shellcheck disable=SC2086 # the entry is a word list on purpose
    fetch_unpack $entry
done
