"""``python -m motif_titan.eval`` as a user runs it, in its own process: the trainer's seed checkpoint (a real
TorchTitan step folder) on a tiny local multiple-choice task, offline, with --limit; the JSON it writes holds the
accuracy that the model's own logits give, computed here from weights loaded with plain DCP."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch.distributed.checkpoint as dcp
from helpers.eval_tasks import direct_loglikelihood, write_multiple_choice_task

from motif_titan.data.text_dataloader import embedded_assets_dir
from motif_titan.model import Motif2Model, motif2_args


def test_front_door_evaluates_the_seed_checkpoint_offline(tmp_path, seed_checkpoint):
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    model = Motif2Model(motif2_args["debugmodel"])
    state = model.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, checkpoint_id=seed_checkpoint, no_dist=True)
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    tokenizer = HuggingFaceTokenizer(str(embedded_assets_dir() / "tokenizer"))
    items = [{"question": "The sky is", "choices": ["blue", "green", "loud"], "answer": 0},
             {"question": "Two plus two is", "choices": ["four", "five"], "answer": 1},
             {"question": "Never scored (--limit 2)", "choices": ["a", "b"], "answer": 0}]
    correct = []
    for item in items[:2]:
        lls = [direct_loglikelihood(model, tokenizer, item["question"], " " + c)[0] for c in item["choices"]]
        correct.append(max(range(len(lls)), key=lls.__getitem__) == item["answer"])
    write_multiple_choice_task(tmp_path / "tasks", "seed_mc", items)
    out = tmp_path / "out.json"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "motif_titan.eval", "--checkpoint", seed_checkpoint, "--tasks", "seed_mc",
         "--include-path", str(tmp_path / "tasks"), "--limit", "2", "--device", "cpu", "--output", str(out)],
        check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "seed_mc" in proc.stdout and "acc" in proc.stdout  # lm-eval's table
    results = json.loads(out.read_text())
    assert results["results"]["seed_mc"]["acc,none"] == pytest.approx(sum(correct) / 2)
    assert results["config"]["model"] == "motif_titan" and results["config"]["limit"] == 2
    assert results["config"]["checkpoint"] == seed_checkpoint

