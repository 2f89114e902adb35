#!/usr/bin/env bash
# Builds the `strata:local` docker image: a static `strata` binary on an empty (scratch) base.
#
#   deploy/build-image.sh            cargo build (static, release), then docker build
#   deploy/build-image.sh PATH       package an already built static binary instead
#
# The binary goes to $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/strata
# (CARGO_TARGET_DIR defaults to /var/tmp/strata-target, as in CI). Set STRATA_IMAGE to
# tag the image differently. Nothing is pulled: the build context is a temp dir holding only
# the binary and the few empty directories and files a scratch image lacks.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
target=x86_64-unknown-linux-gnu
image="${STRATA_IMAGE:-strata:local}"

if [[ $# -ge 1 ]]; then
    bin="$1"
else
    echo "== cargo build (static, release) into $CARGO_TARGET_DIR"
    # crt-static links glibc statically; --target keeps the flag off build scripts and
    # proc macros, which must stay dynamic host binaries.
    (cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --locked --target "$target" -p strata-cli)
    bin="$CARGO_TARGET_DIR/$target/release/strata"
fi

if [[ ! -x "$bin" ]]; then
    echo "build-image: no executable at $bin" >&2
    exit 1
fi
# A scratch image has no dynamic loader and no shared libraries.
if command -v readelf >/dev/null && readelf -d "$bin" 2>/dev/null | grep -q '(NEEDED)'; then
    echo "build-image: $bin needs shared libraries; build it with crt-static" >&2
    readelf -d "$bin" | grep '(NEEDED)' >&2
    exit 1
fi

ctx="$(mktemp -d "${TMPDIR:-/tmp}/strata-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT

cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"
cp "$bin" "$ctx/strata"
chmod 0755 "$ctx/strata"
mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/owned/data"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0755 "$ctx/rootfs" "$ctx/rootfs/etc" "$ctx/owned" "$ctx/owned/data"
printf 'root:x:0:0:root:/:/sbin/nologin\nstrata:x:65532:65532:strata:/data:/sbin/nologin\n' \
    >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nstrata:x:65532:\n' >"$ctx/rootfs/etc/group"
printf 'hosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"
chmod 0644 "$ctx/rootfs/etc/"*

revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
echo "== docker build $image"
docker build --tag "$image" \
    --label "org.opencontainers.image.title=strata" \
    --label "org.opencontainers.image.revision=$revision" \
    "$ctx"
echo "== built $image from $bin"
docker image ls "$image"
