#!/usr/bin/env bash
# GPU smoke run of the curriculum dataloader (from the repo root, motif_titan importable, on a machine with a GPU):
#   1. SFT: chat samples packed into 512-token rows on the flex block_causal flavor (forward + backward: FlexAttention
#      has no CPU backward, so this part cannot run in CPU CI); some samples are longer than a row and get dropped;
#   2. the debug curriculum TOML (three domains, batch ramp 1 -> 2 micro-batches, row length 128 -> 256) with
#      torch.compile, recompilations logged, to count what the sequence-length ramp costs.
# Prints the first and last losses and curriculum metrics of each run. Logs go to ${OUT:-/tmp}/curriculum_*.log.
set -uo pipefail
REPO=$(pwd)
LOGS=${OUT:-/tmp}
WORK=$(mktemp -d)
python3 - "$WORK" <<'PY'
import json, random, sys
from pathlib import Path
work = Path(sys.argv[1])
rng = random.Random(0)
with open(work / "arith.jsonl", "w") as f:
    for i in range(3000):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        f.write(json.dumps({"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                         {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]}) + "\n")
with open(work / "qa.jsonl", "w") as f:
    for i in range(1000):
        n = rng.randint(1, 9)
        long = i % 50 == 0  # 2% of the samples are longer than a row
        f.write(json.dumps({"prompt": f"Count to {n}.", "response": " ".join(str(k) for k in range(1, n + 1))
                            + (" and on" * 400 if long else "")}) + "\n")
Path(work / "sft.toml").write_text(Path("train_configs/motif2_debug.toml").read_text().replace(
    'flavor = "debugmodel"', 'flavor = "debugmodel_flex_attn"').replace('dataset = "embedded"\n', "") + f'''
[curriculum]
mode = "sft"
[[curriculum.domains]]
name = "arith"
sources = ["{work}/arith.jsonl"]
[[curriculum.domains]]
name = "qa"
sources = ["{work}/qa.jsonl"]
[[curriculum.phases]]
start = 1
end = 40
start_weights = {{ arith = 0.8, qa = 0.2 }}
end_weights = {{ arith = 0.5, qa = 0.5 }}
''')
PY
cd /tmp
status=0
run() {
  local name=$1; shift
  echo "== $name"
  if "$@" > "$LOGS/curriculum_$name.log" 2>&1; then
    grep -o "step: *[0-9]* *loss: *[0-9.]*.*tps: *[0-9,]*" "$LOGS/curriculum_$name.log" | sed -n '1p;$p'
    grep "curriculum/" "$LOGS/curriculum_$name.log" | tail -1 | sed 's/.*INFO - //'
  else
    status=1; echo "FAILED"; tail -30 "$LOGS/curriculum_$name.log"
  fi
}
run sft python3 -m motif_titan.train --job.config_file "$WORK/sft.toml" --job.dump_folder /tmp/curr_sft \
    --training.steps 40 --training.seq_len 512 --metrics.log_freq 5 --metrics.disable_color_printing
TORCH_LOGS=recompiles run pretrain_compile python3 -m motif_titan.train \
    --job.config_file "$REPO/train_configs/motif2_debug_curriculum.toml" --job.dump_folder /tmp/curr_pre \
    --training.steps 64 --metrics.log_freq 8 --metrics.disable_color_printing --compile.enable
echo "recompilations logged in pretrain_compile: $(grep -c 'Recompiling function' "$LOGS/curriculum_pretrain_compile.log")"
exit $status
