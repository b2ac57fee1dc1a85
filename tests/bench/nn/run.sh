#!/bin/sh
# tests/bench/nn/run.sh BUILD_DIR [--gpu] — make the benchmark bundle (once), then print the
# nn/ figures (CPU; with --gpu also CUDA fp32/fp16 and PyTorch eager/compile on the same weights).
set -e
B=${1:?build dir}; shift || true
HERE=$(cd "$(dirname "$0")" && pwd)
M=${SEGNODE_BENCH_MODEL:-/tmp/segnode-bench-unet3d}
[ -f "$M/model.json" ] || /usr/bin/python3 "$HERE/make_bench_model.py" "$M"
if [ "$1" = "--gpu" ]; then
  "$B/tests/nn/bench_nn" --model "$M" --backend cuda --runs 10
  "$B/tests/nn/bench_nn" --model "$M" --backend cuda --fp16 --runs 10
  python3 "$HERE/bench_torch.py" "$M" --device cuda
else
  "$B/tests/nn/bench_nn" --model "$M" --backend cpu --runs 1 ${BENCH_NN_ARGS:-}
fi
