#!/usr/bin/env bash
# The small-product kernel (fastbp/_smallgemm.h) checked in plain C on this machine
# and on arm64, whose NEON build of the portable version no CI machine runs natively:
# tools/kernel_check.c built with the compiler flags of setup.py, run here, then
# cross-compiled for arm64 and run under qemu's user-mode emulator.
#
#   bash tools/cross_check.sh
#
# The arm64 half needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian's packages
# gcc-aarch64-linux-gnu and qemu-user); run as root with apt-get, it installs them
# first. Without them it says so and checks this machine only.
set -euo pipefail
cd "$(dirname "$0")/.."

# setup.py's flags (see there), warnings as errors.
flags=(-O3 -fno-trapping-math -fno-math-errno -ffp-contract=off -Wall -Wextra -Werror
       -Wno-unused-function -I fastbp)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== $(uname -m), native"
"${CC:-cc}" "${flags[@]}" tools/kernel_check.c -o "$out/native" -lm
"$out/native"

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 \
                 && apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null 2>&1; } \
            || true
    fi
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    echo "== arm64: skipped (no aarch64-linux-gnu-gcc or qemu-aarch64; install Debian's"
    echo "   gcc-aarch64-linux-gnu and qemu-user to run it)"
    exit 0
fi
echo "== arm64, under qemu"
aarch64-linux-gnu-gcc "${flags[@]}" -static tools/kernel_check.c -o "$out/arm64" -lm
qemu-aarch64 "$out/arm64"
