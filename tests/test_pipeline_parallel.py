"""Pipeline parallelism for Motif-2 through TorchTitan's pipelining, on CPU with gloo.

Each stage would initialize its own parts from its own RNG stream, so every run starts from one seed checkpoint
(TorchTitan's ``--checkpoint.create_seed_checkpoint``). A PP 2 run (1F1B) must log the losses of the plain
single-rank run. PP 2 x FSDP 2 and PP 2 x TP 2 (Interleaved1F1B, two stages per rank), with every optimizer and a
resume, are rows of the composition matrix (tests/test_composition_matrix.py).

TorchTitan 0.2.2 backpropagates the pipeline's summed loss without dividing by the token count (the logged loss
is divided, the gradients are not), so grad_norm is logged in sum units under PP; with gradient clipping active
(``training.max_norm``) the clipped updates, and so the losses, are the same.
"""

from types import SimpleNamespace

import pytest

from motif_titan.infra.pipeline import pipeline_motif2
from motif_titan.model import motif2_args

from conftest import SHORT_RUN, check_muonclip_run_tracks_single_rank, from_seed
from test_training_runs import run_training


@pytest.mark.parametrize("nproc,layout", [
    (2, ["--parallelism.pipeline_parallel_schedule", "1F1B", "--parallelism.pipeline_parallel_microbatch_size", "2"]),
], ids=["pp2_1f1b"])
def test_pipeline_run_logs_the_single_rank_losses(tmp_path, seed_checkpoint, single_rank_reference, nproc, layout):
    reference, _ = single_rank_reference
    losses, log = run_training(tmp_path / "pp", nproc, *SHORT_RUN, *from_seed(seed_checkpoint),
                               "--parallelism.pipeline_parallel_degree", "2",
                               "--parallelism.data_parallel_shard_degree", "1", *layout, return_log=True)
    assert "building stage_idx 1" in log
    # last-stage ranks log the loss (the others log -1); micro-batch sums may round the 5th decimal differently
    assert sorted(losses) == sorted(reference) == [1, 2, 3, 4]
    for step, loss in reference.items():
        assert float(losses[step]) == pytest.approx(float(loss), abs=2e-5), (step, losses, reference)


@pytest.mark.parametrize("nproc,layout", [
    (2, ["--parallelism.pipeline_parallel_schedule", "1F1B", "--parallelism.pipeline_parallel_microbatch_size", "2"]),
], ids=["pp2_1f1b"])
def test_pp_parallel_muon_with_muonclip_tracks_the_single_rank_run(tmp_path, seed_checkpoint, nproc, layout):
    """ParallelMuon and MuonClip under PP 2: stages hold different layers and MuonClip reduces the max logits by
    global layer index. The stages' shape inference at step 1 (run
    on torch.empty inputs) must not be recorded: without skip_max_logits_in_first_forward the second stage
    recorded NaN maxima here. Same losses, max logits and clipped-head counts as the single-rank run."""
    check_muonclip_run_tracks_single_rank(tmp_path, seed_checkpoint, nproc, "--parallelism.pipeline_parallel_degree",
                                          "2", "--parallelism.data_parallel_shard_degree", "1", *layout)


def test_pipeline_split_names_unknown_modules():
    job = SimpleNamespace(model=SimpleNamespace(flavor="debugmodel"), optimizer=SimpleNamespace(),
                          parallelism=SimpleNamespace(module_fqns_per_model_part=[["tok_embeddings", "layers.0"],
                                                                                  ["layers.9", "lm_head"]]))
    with pytest.raises(ValueError, match=r"module_fqns_per_model_part names \['layers.9', 'lm_head'\], which "
                                         r"motif2 flavor 'debugmodel' does not have; allowed: tok_embeddings, "
                                         r"layers.0 .. layers.3, norm, output"):
        pipeline_motif2(None, SimpleNamespace(pp=2), job, None, motif2_args["debugmodel"], None, None)
