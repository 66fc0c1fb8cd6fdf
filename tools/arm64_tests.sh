#!/usr/bin/env bash
# fastbp built for arm64 and its tests run there, under qemu's user-mode emulator:
# the arm64 wheels' code (the portable NEON kernel, the FZ bit of _fpenv.h, OpenMP)
# on a machine that is not one.
#
#   bash tools/arm64_tests.sh [pytest arguments]
#
# Default: the kernels, the floating-point environment, the gradient checks, the
# NumPy reference and the threaded step (about 1,560 tests, 2-3 minutes); `tests` runs the whole suite (12
# minutes), where what starts another Python process fails (qemu runs this one
# only: the command line's tests, multiprocessing's spawn), and so does what reads
# files outside fastbp/ and tests/ (the examples, the docs). Everything goes under
# build/arm64/ (reused by the next run):
#   root/  an arm64 Python (Debian's packages, unpacked, not installed)
#   site/  NumPy and SciPy as PyPI's arm64 wheels (the versions this Python runs),
#          threadpoolctl, pytest and hypothesis
#   pkg/   fastbp and its tests, the extensions compiled by aarch64-linux-gnu-gcc
#          from Cython's C with setup.py's flags and directives
# Needs Debian's gcc-aarch64-linux-gnu and qemu-user (installed with apt-get when run
# as root), Debian's arm64 packages and the package index; without them it says so
# and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
work=$here/build/arm64
root=$work/root
site=$work/site
pkg=$work/pkg
if [ $# -gt 0 ]; then
    tests=("$@")
else
    tests=(tests/test_kernels.py tests/test_fpenv.py tests/test_gradients.py tests/test_reference.py
           tests/test_threads.py)
fi

skip() {
    echo "== arm64 tests skipped: $1"
    exit 0
}
. tools/debian.sh

if ! have aarch64-linux-gnu-gcc || ! have qemu-aarch64; then
    as_root || skip "no aarch64-linux-gnu-gcc or qemu-aarch64, and no apt-get to install them"
    apt_install gcc-aarch64-linux-gnu qemu-user \
        || skip "could not install gcc-aarch64-linux-gnu and qemu-user"
fi

# 1. Debian's arm64 Python 3.11 (bookworm's), with the libraries it loads.
py=3.11
if [ ! -x "$root/usr/bin/python$py" ]; then
    as_root || skip "no arm64 Python under $root, and no apt-get to fetch one"
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -qq >/dev/null 2>&1 || skip "apt-get update failed"
    mkdir -p "$work/debs"
    packages=(python$py-minimal libpython$py-minimal libpython$py-stdlib libpython$py-dev
              python$py-dev libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libexpat1 libffi8
              libssl3 libbz2-1.0 liblzma5 libuuid1 libsqlite3-0 libncursesw6 libtinfo6
              libreadline8 libcrypt1 libnsl2 libtirpc3 libdb5.3 libgssapi-krb5-2 libkrb5-3
              libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1)
    (cd "$work/debs" && apt-get download "${packages[@]/%/:arm64}" >/dev/null 2>&1) \
        || skip "could not download Debian's arm64 Python $py (${packages[*]})"
    rm -rf "$root" && mkdir -p "$root"
    for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$root"; done
fi
arm_python=(qemu-aarch64 -L "$root" -E "PYTHONPATH=$site:$pkg" "$root/usr/bin/python$py")

# 2. NumPy and SciPy for arm64: the wheels of the versions this (host) Python runs.
numpy_version=$(python -c "import numpy; print(numpy.__version__)")
scipy_version=$(python -c "import scipy; print(scipy.__version__)")
if [ ! -d "$site/numpy-$numpy_version.dist-info" ] || [ ! -d "$site/scipy-$scipy_version.dist-info" ]; then
    rm -rf "$site"
    python -m pip install --quiet --target "$site" --only-binary=:all: \
        --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
        --python-version $py --implementation cp \
        "numpy==$numpy_version" "scipy==$scipy_version" threadpoolctl pytest hypothesis \
        || skip "could not fetch the arm64 wheels of numpy $numpy_version and scipy $scipy_version"
fi

# 3. The extensions: Cython's C with setup.py's release directives, compiled with its
# flags (OpenMP on, as on Linux) for arm64.
python -m pip install --quiet "cython>=3.0"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r fastbp tests "$pkg/"
rm -f "$pkg"/fastbp/*.so "$pkg"/fastbp/*.c
directives=boundscheck=False,wraparound=False,initializedcheck=False,cdivision=True
directives=$directives,nonecheck=False,embedsignature=True
flags=(-shared -fPIC -O3 -fno-trapping-math -fno-math-errno -ffp-contract=off
       -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION -I fastbp
       -I "$site/numpy/_core/include" -I "$root/usr/include/python$py" -I "$root/usr/include")
for module in _core _csv _guard; do
    python -m cython -3 --directive "$directives" "fastbp/$module.pyx" -o "$work/$module.c"
    openmp=()
    [ "$module" = _core ] && openmp=(-fopenmp)
    aarch64-linux-gnu-gcc "${flags[@]}" "${openmp[@]}" "$work/$module.c" \
        -o "$pkg/fastbp/$module.cpython-${py/./}-aarch64-linux-gnu.so"
done

# 4. The tests, on arm64 (from the copy: this tree's fastbp has this machine's build).
cd "$pkg"
echo "== arm64 (qemu): $("${arm_python[@]}" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')"
"${arm_python[@]}" -c "from fastbp import _core; print('   kernel versions', _core.SMALL_GEMM_ISAS, '| flushes subnormals', _core.FLUSHES_SUBNORMALS, '| OpenMP', _core.HAVE_OPENMP)"
"${arm_python[@]}" -m pytest -q -p no:cacheprovider "${tests[@]}"
