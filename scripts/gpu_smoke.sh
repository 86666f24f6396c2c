#!/usr/bin/env bash
# GPU smoke run of the foundation (run from the repo root on a machine with a CUDA GPU):
#   1. motif_titan's launcher on the debug TOML (no shims are applied when a GPU is present),
#   2. TorchTitan's own entry point, `torchrun -m torchtitan.train`, loading motif_titan via custom_import,
#   3. the flex-attention flavor with block_causal document masks (forward + backward on the GPU),
#   4. bf16 mixed precision + torch.compile + selective activation checkpointing.
# Prints the logged losses of each run. Logs go to ${OUT:-/tmp}/gpu_smoke_*.log.
set -uo pipefail
REPO=$(pwd)
CFG=$REPO/train_configs/motif2_debug.toml
LOGS=${OUT:-/tmp}
COMMON=(--job.config_file "$CFG" --training.steps 30 --metrics.log_freq 5 --metrics.disable_color_printing)
cd /tmp  # so the source tree does not shadow the installed package
status=0
run() {
  local name=$1; shift
  echo "== $name"
  if "$@" "${COMMON[@]}" --job.dump_folder "/tmp/smoke_$name" > "$LOGS/gpu_smoke_$name.log" 2>&1; then
    grep -o "step: *[0-9]* *loss: *[0-9.]*.*tps: *[0-9,]*" "$LOGS/gpu_smoke_$name.log" | sed -n '1p;$p'
  else
    status=1; echo "FAILED"; tail -30 "$LOGS/gpu_smoke_$name.log"
  fi
}
run launcher python -m motif_titan.train
run torchtitan_train torchrun --standalone --nproc_per_node=1 -m torchtitan.train
run flex python -m motif_titan.train --model.flavor debugmodel_flex_attn
run bf16_compile_sac python -m motif_titan.train --training.mixed_precision_param bfloat16 --compile.enable \
    --activation_checkpoint.mode selective
exit $status
