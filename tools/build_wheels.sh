#!/usr/bin/env bash
# Build kronnet's release artifacts into OUTDIR:
#   * one abi3 wheel (cp39-abi3: every CPython >= 3.9) for x86_64 Linux, tagged
#     manylinux2014 (= manylinux_2_17: glibc >= 2.17), linked by maturin through
#     zig against the glibc 2.17 symbol versions, so it installs on any x86_64
#     Linux with glibc >= 2.17 regardless of the build machine's glibc;
#   * the sdist (kronnet-VERSION.tar.gz).
#
# Usage: bash tools/build_wheels.sh OUTDIR
#
# Needs: python3 (with venv) and a Rust toolchain (cargo, rustc >= the
# rust-version in Cargo.toml) with the x86_64-unknown-linux-gnu target.
# Installs the rest itself (from PyPI) into a tools venv, by default
# ~/.cache/kronnet-wheel-tools (override with KRONNET_TOOLS_VENV): ziglang,
# auditwheel, and maturin when no maturin is on PATH. A venv rather than the
# global pip keeps this working on PEP 668 "externally managed" Pythons.
#
# Portability: nothing is compiled for the build machine's CPU. RUSTFLAGS /
# CARGO_ENCODED_RUSTFLAGS / CARGO_BUILD_RUSTFLAGS and target-specific
# CARGO_TARGET_*_RUSTFLAGS are cleared, and the script refuses to run if a
# cargo config file sets target-cpu or target-feature; AVX2 is chosen at run
# time by the crate's own feature detection.
#
# aarch64: not built. Cross-compiling with the same tools (maturin --zig
# --target aarch64-unknown-linux-gnu) needs the Rust standard library for that
# target, which `rustup target add` downloads from the Rust distribution
# server; only crates.io/PyPI/Debian are reachable where this project is
# built, so that step cannot work here. On a machine that has the target
# installed, the same maturin command with --target aarch64-unknown-linux-gnu
# produces a manylinux2014_aarch64 wheel.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1"
OUTDIR="$(cd "$1" && pwd)"
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

TARGET=x86_64-unknown-linux-gnu
POLICY=manylinux2014            # = manylinux_2_17 (PEP 600 name)
POLICY_PEP600=manylinux_2_17

say() { echo "== build_wheels: $*"; }

# --- no CPU-specific code generation -------------------------------------
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
unset CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS
for cfg in "$ROOT/.cargo/config.toml" "$ROOT/.cargo/config" \
           "${CARGO_HOME:-$HOME/.cargo}/config.toml" "${CARGO_HOME:-$HOME/.cargo}/config"; do
    if [ -f "$cfg" ] && grep -Eq 'target-(cpu|feature)' "$cfg"; then
        echo "build_wheels: $cfg sets target-cpu/target-feature; refusing to build a wheel tuned for this machine" >&2
        exit 1
    fi
done

# --- tools ----------------------------------------------------------------
command -v cargo >/dev/null || { echo "build_wheels: cargo not found (install a Rust toolchain)" >&2; exit 1; }
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "build_wheels: Rust target $TARGET is not installed" >&2
    exit 1
fi
TOOLS="${KRONNET_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kronnet-wheel-tools}"
if [ ! -x "$TOOLS/bin/python" ]; then
    say "creating tools venv $TOOLS"
    python3 -m venv "$TOOLS"
fi
say "installing ziglang and auditwheel into $TOOLS"
"$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "ziglang>=0.10" "auditwheel>=6"
export PATH="$TOOLS/bin:$PATH"
# maturin runs `python3 -m ziglang` to find zig: make that the tools venv's.
export CARGO_ZIGBUILD_PYTHON_PATH="$TOOLS/bin/python3"
if ! command -v maturin >/dev/null; then
    say "maturin not found: installing it into $TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.5,<2"
fi
say "$(maturin --version), zig $("$TOOLS/bin/python3" -m ziglang version), $(rustc --version)"

# --- build ----------------------------------------------------------------
shopt -s nullglob
stale=("$OUTDIR"/kronnet-*.whl "$OUTDIR"/kronnet-*.tar.gz)
if [ ${#stale[@]} -gt 0 ]; then
    say "removing old artifacts from $OUTDIR: ${stale[*]##*/}"
    rm -f "${stale[@]}"
fi

say "wheel: maturin build --release --zig --compatibility $POLICY --target $TARGET"
maturin build --release --zig --compatibility "$POLICY" --auditwheel check \
    --target "$TARGET" -o "$OUTDIR"
say "sdist: maturin sdist"
maturin sdist -o "$OUTDIR"

wheels=("$OUTDIR"/kronnet-*.whl)
sdists=("$OUTDIR"/kronnet-*.tar.gz)
[ ${#wheels[@]} -eq 1 ] || { echo "build_wheels: expected one wheel in $OUTDIR, found ${#wheels[@]}" >&2; exit 1; }
[ ${#sdists[@]} -eq 1 ] || { echo "build_wheels: expected one sdist in $OUTDIR, found ${#sdists[@]}" >&2; exit 1; }
wheel="${wheels[0]}"

# --- verify the platform tag -----------------------------------------------
case "${wheel##*/}" in
    *-cp39-abi3-*"${POLICY_PEP600}_x86_64"*|*-cp39-abi3-*"${POLICY}_x86_64"*) ;;
    *) echo "build_wheels: ${wheel##*/} is not tagged cp39-abi3 ${POLICY}_x86_64" >&2; exit 1 ;;
esac
say "auditwheel show ${wheel##*/}"
report="$(auditwheel show "$wheel")"
echo "$report"
# auditwheel names the most restrictive policy the binary satisfies, e.g.
# 'is consistent with the following platform tag: "manylinux_2_17_x86_64"'.
# Any glibc version newer than 2.17 there (or none) means the wheel would not
# install on every manylinux2014 system.
flat="$(echo "$report" | tr '\n' ' ' | tr -s ' ')"
if ! echo "$flat" | grep -Eq "following platform tag: \"(${POLICY_PEP600}|manylinux_2_(5|12))_x86_64\""; then
    echo "build_wheels: auditwheel does not find ${wheel##*/} consistent with $POLICY_PEP600" >&2
    exit 1
fi

say "built:"
ls -l "$OUTDIR"/kronnet-*
