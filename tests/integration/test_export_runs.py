"""The folders a real training run saves leave the trainer: a full DCP step folder (with optimizer state) describes
its model and exports to an HF folder that loads back bit for bit; the run's HF last save
(``checkpoint.last_save_in_hf``) is the same folder an export writes (file names, config.json, GDA lambdas in
float32), and both agree with the plain float64 reader of the format."""

import json

import torch
from safetensors import safe_open

from motif_titan.export.__main__ import main as export_main
from motif_titan.model import Motif2Model, motif2_args
from motif_titan.model.hf_config import model_args_record
from motif_titan.checkpoint_io import open_checkpoint
from helpers.hf_export import TOKENS, assert_round_trip, import_hf
from helpers.launch import run_training


def test_a_trained_step_folder_and_the_hf_last_save_are_the_export_folder(tmp_path):
    run_training(tmp_path / "run", 1, "--training.steps", "3", "--checkpoint.enable", "--checkpoint.interval", "2",
                 "--checkpoint.last_save_model_only", "--checkpoint.last_save_in_hf")
    checkpoints = tmp_path / "run" / "checkpoint"
    step2, step3 = checkpoints / "step-2", checkpoints / "step-3"
    assert json.loads((step2 / "model_args.json").read_text()) == model_args_record(motif2_args["debugmodel"])
    assert "model_args.json" in json.loads((step2 / "motif_manifest.json").read_text())["files"]

    # the full training checkpoint (model, optimizer, data position) exports its weights
    reader = open_checkpoint(step2)
    trained = Motif2Model(motif2_args["debugmodel"])
    trained.load_state_dict(reader.get_many(list(reader.shapes())))
    out = tmp_path / "exported"
    assert export_main(["--checkpoint", str(step2), "--out", str(out), "--hf-assets", "embedded",
                        "--dtype", "fp32"]) == 0
    assert_round_trip(trained.eval(), out)

    # the run's HF last save holds the same files and description an export writes
    saved = {p.name for p in step3.iterdir()}
    assert saved == {p.name for p in out.iterdir()} | {"motif_manifest.json"}, saved  # no staging folder left
    assert json.loads((step3 / "config.json").read_text()) == json.loads((out / "config.json").read_text())
    with safe_open(step3 / "model-00001-of-00001.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys() if ".lambda_" in k} == {"F32"}
    last = import_hf(step3)
    assert_round_trip(last, step3)
    with torch.no_grad():
        assert not torch.equal(last(TOKENS), trained.eval()(TOKENS))  # step 3 trained on from step 2
