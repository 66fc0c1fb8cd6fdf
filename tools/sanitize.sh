#!/usr/bin/env bash
# Build fastbp's compiled extension with AddressSanitizer and UndefinedBehaviorSanitizer
# and run the tests and the fuzzers under it.
#
#   tools/sanitize.sh [--debug] [fast|full] [pytest arguments...]
#
# fast  the kernels, the network plan, the data checks, sparse input, the API fuzzer,
#       the model-file fuzzer and the step's phase timers (a few minutes on 2 cores;
#       what .ci/run runs)
# full  the whole test suite (the default)
# --debug  also FASTBP_DEBUG=1 (setup.py): Cython's bounds, wraparound and
#          initialization checks on, no optimization; and FASTBP_PHASE_TIMES=1, the
#          step's phase timers (bench/phases.py), which no other build has.
#
# The build goes to its own copy of the source tree (build/sanitize or build/sanitize-debug,
# or $FASTBP_SANITIZE_DIR), never into the in-place build; the tests import it from
# there (checked below). Python and NumPy are not instrumented: libasan (which must
# come first) and libstdc++ are preloaded into the interpreter. Leak detection is
# off, since Python keeps much of its memory to the end by design. Any report
# stops the run with a non-zero status (UBSan does not recover).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

debug=0
if [[ "${1:-}" == "--debug" ]]; then
    debug=1
    shift
fi
mode=${1:-full}
[[ $# -gt 0 ]] && shift
case "$mode" in
    fast)
        tests=(tests/test_kernels.py tests/test_network.py tests/test_data.py
               tests/test_sparse.py tests/test_input_gradient.py tests/test_residual.py
               tests/test_fuzz_api.py tests/test_persistence_fuzz.py
               tests/test_threads.py::test_phase_times_are_none_without_the_timers
               tests/test_threads.py::test_phase_timers_account_for_every_step_of_every_thread)
        ;;
    full) tests=(tests) ;;
    *) echo "usage: tools/sanitize.sh [--debug] [fast|full] [pytest arguments...]" >&2; exit 2 ;;
esac

python=${PYTHON:-python}
cc=${CC:-gcc}
if ! "$python" -c "import Cython, setuptools" 2>/dev/null; then  # to build from source
    "$python" -m pip install --quiet "Cython>=3.0" "setuptools>=68"
fi
asan=$("$cc" -print-file-name=libasan.so)
stdcxx=$("$cc" -print-file-name=libstdc++.so)
for lib in "$asan" "$stdcxx"; do
    if [[ ! -e "$lib" ]]; then
        echo "tools/sanitize.sh: $cc has no $(basename "$lib") (install its sanitizer runtime)" >&2
        exit 2
    fi
done

suffix=$([[ $debug == 1 ]] && echo "-debug" || true)
build=${FASTBP_SANITIZE_DIR:-$root/build/sanitize$suffix}
src=$build/src
echo "== building the sanitized extension in $src (FASTBP_DEBUG=$debug)"
# The working tree as git sees it (tracked and new files, not ignored ones), so that
# no build output of the in-place build comes along.
rm -rf "$src"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e "$f" ]] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$src"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
(
    cd "$src"
    CC="$cc" CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" FASTBP_DEBUG=$debug \
        FASTBP_PHASE_TIMES=$debug \
        "$python" setup.py -q build_ext --inplace >"$build/build.log" 2>&1 \
        || { cat "$build/build.log"; exit 1; }
)

export LD_PRELOAD="$asan:$stdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_init_order=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONMALLOC=malloc  # Python's objects through malloc too, where ASan sees them
export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONFAULTHANDLER=1

built=$(cd "$src" && "$python" -c "import fastbp._core as c; print(c.__file__)")
if [[ "$built" != "$src"/* ]]; then
    echo "tools/sanitize.sh: the tests would import $built, not the sanitized build" >&2
    exit 1
fi
echo "== running ${tests[*]} under ASan and UBSan ($built)"
cd "$src"
"$python" -m pytest "${tests[@]}" -q -p no:cacheprovider "$@"
