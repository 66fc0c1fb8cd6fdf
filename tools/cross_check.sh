#!/usr/bin/env bash
# The small-product kernel (fastbp/_smallgemm.h) checked in plain C on this machine
# and on arm64, whose NEON build of the portable version no CI machine runs natively:
# tools/kernel_check.c built with the compiler flags of setup.py, by GCC and by Clang
# (macOS's compiler), run here, then compiled for arm64 and run under qemu's
# user-mode emulator.
#
#   bash tools/cross_check.sh
#
# Needs cc; Clang, aarch64-linux-gnu-gcc and qemu-aarch64 (Debian's clang,
# gcc-aarch64-linux-gnu and qemu-user) for the rest: run as root with apt-get, it
# installs them first. Without them it says so and checks what it can.
set -euo pipefail
cd "$(dirname "$0")/.."

. tools/debian.sh
if ! have clang || ! have aarch64-linux-gnu-gcc || ! have qemu-aarch64; then
    apt_install clang gcc-aarch64-linux-gnu qemu-user || true
fi

# setup.py's flags (see there), warnings as errors.
flags=(-O3 -fno-trapping-math -fno-math-errno -ffp-contract=off -Wall -Wextra -Werror
       -Wno-unused-function -I fastbp)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
arm=0
have aarch64-linux-gnu-gcc && have qemu-aarch64 && arm=1

echo "== $(uname -m), ${CC:-cc}"
"${CC:-cc}" "${flags[@]}" tools/kernel_check.c -o "$out/native" -lm
"$out/native"
if have clang; then
    echo "== $(uname -m), clang"
    clang "${flags[@]}" tools/kernel_check.c -o "$out/clang" -lm
    "$out/clang"
else
    echo "== clang: skipped (not installed)"
fi
if [ $arm = 0 ]; then
    echo "== arm64: skipped (no aarch64-linux-gnu-gcc or qemu-aarch64; install Debian's"
    echo "   gcc-aarch64-linux-gnu and qemu-user to run it)"
    exit 0
fi
echo "== arm64, aarch64-linux-gnu-gcc, under qemu"
aarch64-linux-gnu-gcc "${flags[@]}" -static tools/kernel_check.c -o "$out/arm64" -lm
qemu-aarch64 "$out/arm64"
if have clang; then
    echo "== arm64, clang, under qemu"
    clang --target=aarch64-linux-gnu --sysroot=/usr/aarch64-linux-gnu \
        -I /usr/aarch64-linux-gnu/include "${flags[@]}" -c tools/kernel_check.c \
        -o "$out/arm64-clang.o"
    aarch64-linux-gnu-gcc -static "$out/arm64-clang.o" -o "$out/arm64-clang" -lm
    qemu-aarch64 "$out/arm64-clang"
fi
