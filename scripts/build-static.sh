#!/usr/bin/env bash
# Builds preflight as one fully static musl binary:
#   target/<arch>-unknown-linux-musl/release/preflight
# Extra arguments go to cargo: `scripts/build-static.sh --example demo-app` also builds the
# example app (target/<arch>-unknown-linux-musl/release/examples/demo-app).
#
# The binary is non-PIE (relocation-model=static): nothing to relocate at start, so a
# supervising preflight only pages in the code it runs. ring's C and assembly need a musl C
# compiler: musl-gcc (Debian: musl-tools), or on Alpine the system cc.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${PREFLIGHT_TARGET:-$(uname -m)-unknown-linux-musl}"
die() { echo "build-static: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH: install Rust (https://rustup.rs) first"
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]; then
    command -v rustup >/dev/null 2>&1 ||
        die "the Rust standard library for $TARGET is missing and rustup is not installed: install it with your Rust distribution (Alpine: apk add rust)"
    echo "build-static: adding the $TARGET target with rustup" >&2
    rustup target add "$TARGET" >&2 ||
        die "'rustup target add $TARGET' failed (offline? no rustup toolchain?): run it by hand, then retry"
fi

# A musl host (Alpine) compiles for musl with its own cc; a glibc host needs musl-gcc.
cc_var="CC_${TARGET//-/_}"
host=$(rustc -vV | sed -n 's/^host: //p')
if [ -z "${!cc_var:-}" ] && [ "$host" != "$TARGET" ]; then
    command -v musl-gcc >/dev/null 2>&1 ||
        die "no musl C compiler for ring's C code: apt-get install musl-tools (Alpine: apk add musl-dev gcc)"
    export "$cc_var=musl-gcc"
fi

export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static"
# Group the code the supervisor runs (see build.rs and scripts/profile-supervisor.py).
export PREFLIGHT_LINK_LAYOUT="${PREFLIGHT_LINK_LAYOUT-$PWD/scripts/supervisor-layout.ld}"
cargo build --release --locked --target "$TARGET" --bin preflight "$@" >&2 || die "cargo build failed (see above)"

BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/preflight"
if command -v file >/dev/null 2>&1 && ! file "$BIN" | grep -q 'statically linked'; then
    die "$BIN is not statically linked: $(file -b "$BIN")"
fi
echo "build-static: $BIN, $(stat -c %s "$BIN") bytes" >&2
