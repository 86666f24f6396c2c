#!/usr/bin/env bash
# The kernel benchmarks of benchmarks/RESULTS.md in one call on a lent GPU machine (repo root; results under $OUT).
#   .whl: the wheels of ../shared/device/wheels.sh; .kwhl: liger_kernel's wheel (pip download liger-kernel
#   --no-deps -d .kwhl) and Dion's dion/newton_schulz_triton.py (from a snapshot of microsoft/dion, baseline only).
# STEPS picks what runs (default: tests polynorm ns sweep).
set -uo pipefail
REPO=$(pwd)
OUT=${OUT:-/tmp/kernel_bench}
mkdir -p "$OUT"
STEPS=${STEPS:-"tests polynorm ns sweep"}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$REPO/.site" \
  "$REPO"/.whl/*.whl "$REPO"/.kwhl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-index --target "$REPO/.site" "$REPO" >/dev/null || exit 1
export PYTHONPATH=$REPO/.site PYTHONUNBUFFERED=1
cd /tmp  # so the source tree does not shadow the installed package
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.draw,power.limit --format=csv
for step in $STEPS; do
  echo "== $step $(date +%T)"
  case $step in
    tests) timeout ${TESTS_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider \
             "$REPO/tests/unit/test_newton_schulz_kernel.py" "$REPO/tests/unit/test_polynorm_kernels.py" \
             "$REPO/tests/unit/test_muon_elementwise_kernels.py" > "$OUT/tests.log" 2>&1; tail -4 "$OUT/tests.log" ;;
    polynorm) timeout ${PN_TIMEOUT:-330} python3 "$REPO/benchmarks/polynorm.py" --rep-ms 40 \
                --out "$OUT/polynorm_h200.json" > "$OUT/polynorm.log" 2>&1; tail -8 "$OUT/polynorm.log" ;;
    ns) timeout ${NS_TIMEOUT:-420} python3 "$REPO/benchmarks/newton_schulz.py" \
          --dion "$REPO/.kwhl/dion_newton_schulz_triton.py" --dion-commit 0a059a4542e5aa74b40dcd1dce363836c7afcd48 \
          --out "$OUT/newton_schulz_h200.json" > "$OUT/ns.log" 2>&1; tail -${NS_TAIL:-40} "$OUT/ns.log" ;;
    sweep) timeout 120 python3 "$REPO/benchmarks/polynorm.py" --sweep --rep-ms 40 \
             --out "$OUT/polynorm_sweep_h200.json" > "$OUT/sweep.log" 2>&1; grep "best" "$OUT/sweep.log" ;;
    muon) for be in ${MUON_BACKENDS:-auto torch}; do
            PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout ${MUON_TIMEOUT:-150} torchrun --standalone --nproc_per_node=1 \
              "$REPO/benchmarks/muon.py" --layers ${MUON_LAYERS:-20} --steps 3 --modes distributed \
              parallel_pipelined_lpt --ns-backend $be --ns-cuda-graphs --out "$OUT/muon_h200x1_$be.json" > "$OUT/muon_$be.log" 2>&1
            grep -E "^(distributed|parallel|bitwise)" "$OUT/muon_$be.log"; grep -A5 '"single_gpu"' "$OUT/muon_$be.log"
          done ;;
    ncu) timeout 150 ncu --clock-control none --kernel-name regex:_poly_norm --launch-count 4 \
           --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
           python3 "$REPO/benchmarks/polynorm_profile.py" > "$OUT/ncu_polynorm.txt" 2>&1
         grep -E "_poly_norm|Memory Throughput|DRAM Throughput|L2 Hit Rate|Achieved Occupancy|Registers Per|Duration" \
           "$OUT/ncu_polynorm.txt" | head -40 ;;
  esac
done
echo "== done $(date +%T)"
