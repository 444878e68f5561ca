#!/usr/bin/env bash
# nbval over every notebook in report/ under the thread counts and CPU kernels of other machines (`make crosscheck`).
#
#   tools/crosscheck.sh [SETTING ...]     each SETTING is a space-separated list of VAR=value; default: all below
#
# The committed outputs come from a 2-thread run on one x86-64 CPU. The thread count changes the order of some
# reductions, and oneDNN / MKL / ATen pick their kernels by instruction set (SSE4.1 up to AVX-512), so another
# machine can move the last printed digit; nbval's comparison allows one unit there (tests/nbval_numbers.py).
# Prints one line per setting (pass/fail, wall seconds) and exits non-zero if any setting failed; logs go to
# build/crosscheck/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ $# -eq 0 ]; then
    set -- "OMP_NUM_THREADS=1" "OMP_NUM_THREADS=2" "OMP_NUM_THREADS=4" \
        "ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 ATEN_CPU_CAPABILITY=default" \
        "ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2"
fi
mkdir -p build/crosscheck
status=0
summary=()
for setting in "$@"; do
    log="build/crosscheck/$(echo "$setting" | tr ' =' '_-').log"
    start=$(date +%s)
    # shellcheck disable=SC2086  # the setting and tools/scratch.py's output are lists of VAR=value words
    if env $setting $("$PY" tools/scratch.py) "$PY" -m pytest -p no:cacheprovider -q report >"$log" 2>&1; then
        result=pass
    else
        result=FAIL
        status=1
    fi
    line="$result  $(($(date +%s) - start)) s  $setting  ($(tail -n 1 "$log"))"
    summary+=("$line")
    echo "$line"
done
printf '%s\n' "== summary" "${summary[@]}"
exit $status
