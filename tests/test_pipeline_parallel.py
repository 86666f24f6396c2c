"""Pipeline parallelism for Motif-2 through TorchTitan's pipelining, on CPU with gloo.

Each stage would initialize its own parts from its own RNG stream, so every run starts from one seed checkpoint
(TorchTitan's ``--checkpoint.create_seed_checkpoint``). A PP 2 run (1F1B) and a PP 2 x TP 2 run (Interleaved1F1B,
two stages per rank) must log the losses of the plain single-rank run.

TorchTitan 0.2.2 backpropagates the pipeline's summed loss without dividing by the token count (the logged loss
is divided, the gradients are not), so grad_norm is logged in sum units under PP; with gradient clipping active
(``training.max_norm``) the clipped updates, and so the losses, are the same.
"""

from types import SimpleNamespace

import pytest

from motif_titan.infra.pipeline import pipeline_motif2
from motif_titan.model import motif2_args

from conftest import SHORT_RUN, from_seed
from test_training_runs import run_training


@pytest.mark.parametrize("nproc,layout", [
    (2, ["--parallelism.pipeline_parallel_schedule", "1F1B", "--parallelism.pipeline_parallel_microbatch_size", "2"]),
    (4, ["--parallelism.pipeline_parallel_schedule", "Interleaved1F1B",
         "--parallelism.pipeline_parallel_microbatch_size", "1", "--parallelism.tensor_parallel_degree", "2"]),
], ids=["pp2_1f1b", "pp2_x_tp2_interleaved"])
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


def test_pipeline_refuses_muonclip():
    """torch's pipeline stages infer shapes at the first step by running later stages on torch.empty inputs: seen
    on gloo, the second stage then recorded NaN max logits for its layers."""
    job = SimpleNamespace(model=SimpleNamespace(flavor="debugmodel"),
                          optimizer=SimpleNamespace(qk_clip_threshold=100.0),
                          parallelism=SimpleNamespace(module_fqns_per_model_part=None))
    with pytest.raises(NotImplementedError, match=r"optimizer.qk_clip_threshold = 100.0 with "
                                                  r"parallelism.pipeline_parallel_degree = 2: .* uninitialized "
                                                  r"placeholder inputs, .* Allowed under PP: "
                                                  r"optimizer.qk_clip_threshold = 0 \(off\)"):
        pipeline_motif2(None, SimpleNamespace(pp=2), job, None, motif2_args["debugmodel"], None, None)


def test_pipeline_split_names_unknown_modules():
    job = SimpleNamespace(model=SimpleNamespace(flavor="debugmodel"), optimizer=SimpleNamespace(),
                          parallelism=SimpleNamespace(module_fqns_per_model_part=[["tok_embeddings", "layers.0"],
                                                                                  ["layers.9", "lm_head"]]))
    with pytest.raises(ValueError, match=r"module_fqns_per_model_part names \['layers.9', 'lm_head'\], which "
                                         r"motif2 flavor 'debugmodel' does not have; allowed: tok_embeddings, "
                                         r"layers.0 .. layers.3, norm, output"):
        pipeline_motif2(None, SimpleNamespace(pp=2), job, None, motif2_args["debugmodel"], None, None)
