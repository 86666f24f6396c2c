"""Context parallelism for Motif-2 through TorchTitan's CP plan (each GDA attention call wrapped).

On CPU (gloo): CP 2 (and CP 2 x TP 2) forward with flex attention gives the single-rank model's logits at every
position the rank holds, and MuonClip's per-head max logits once MAX-reduced over the ranks, with and without the
head-tail load balancer, for causal and document (block_causal) masks. CPU has no flex backward and no ring
attention for SDPA (its kernels are CUDA-only), so training is checked on GPUs: CP 2 runs of the debug flavor
(SDPA eager and compiled, flex) log the single-GPU run's losses, when two CUDA devices exist. Bad layouts are
refused naming the field (tests/unit/test_context_parallel.py).
"""

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torchtitan.distributed.context_parallel import prepare_context_parallel_input

from motif_titan.infra.parallelize import apply_cp, apply_tp
from motif_titan.model import Motif2Model, Motif2ModelArgs
from motif_titan.optim.max_logits import MaxLogitRecorder

from helpers.launch import SHORT_RUN, check_muonclip_run_tracks_single_rank, from_seed
from helpers.gloo_ranks import run_on_gloo_ranks
from helpers.launch import run_training


EOS = 5
ARGS = Motif2ModelArgs(dim=32, n_layers=2, n_heads=10, n_kv_heads=4, n_noise_heads=2, head_dim=8,
                       ffn_hidden_dim=64, vocab_size=96, max_seq_len=512, rope_theta=10_000.0, attn_type="flex")
BATCH, SEQ = 2, 512  # flex shards whole 128-position blocks: 2 ranks x 2 head-tail chunks x 128


def _check_cp_forward(rank: int, world: int, tp: int) -> list[str]:
    cp = world // tp
    failures = []
    # each case compiles flex anew (about 25 s with a cold inductor cache on 2 cores), so each mask and each
    # balancer setting runs once: CP 2 alone takes the causal mask with the head-tail balancer and the document
    # mask without one; CP 2 x TP 2 (TP changes heads, not the sequence split) the document mask with head-tail
    cases = [("causal", "headtail"), ("block_causal", None)] if tp == 1 else [("block_causal", "headtail")]
    for mask_type, balancer in cases:
        # a fresh compile per case: recompiling flex with new mask functions in one process makes dynamic
        # shapes, whose CPU code inductor (torch 2.13) fails to build
        torch._dynamo.reset()
        torch.manual_seed(0)
        args = dataclasses.replace(ARGS, attn_mask_type=mask_type)
        reference = Motif2Model(args)
        with torch.no_grad():
            reference.init_weights()
        model = copy.deepcopy(reference)
        expected_recorder = MaxLogitRecorder(reference.attention_layers(), args.n_layers)  # MuonClip's recording
        tokens = torch.randint(EOS + 1, args.vocab_size, (BATCH, SEQ))
        tokens[0, [100, 301]] = EOS  # documents end inside both ranks' chunks
        tokens[1, 200] = EOS
        masks = reference.get_attention_masks(tokens, SimpleNamespace(eos_id=EOS))
        with torch.no_grad():
            expected = reference(tokens, attention_masks=masks)

        mesh = init_device_mesh("cpu", (cp, tp), mesh_dim_names=("cp", "tp"))
        if tp > 1:
            apply_tp(model, mesh["tp"], loss_parallel=True)
        apply_cp(model, mesh["cp"])
        recorder = MaxLogitRecorder(model.attention_layers(), args.n_layers,
                                    tp_mesh=mesh["tp"] if tp > 1 else None, cp_mesh=mesh["cp"])
        local_tokens, _, kwargs = prepare_context_parallel_input(
            tokens, tokens.clone(), {"attention_masks": masks}, mesh["cp"], torch.device("cpu"), balancer)
        positions = kwargs["positions"]
        with torch.no_grad():
            logits = model(local_tokens, **kwargs)
        if isinstance(logits, DTensor):  # loss parallel: vocab-sharded over tp
            logits = logits.full_tensor()
        case = f"{mask_type}, load balancer {balancer}"
        if local_tokens.shape != (BATCH, SEQ // cp):
            failures.append(f"{case}: local tokens {tuple(local_tokens.shape)}")
            continue
        # the cp rank's share: contiguous without a balancer, chunks r and 2*cp-1-r with head-tail
        r, chunk = mesh["cp"].get_local_rank(), SEQ // (2 * cp)
        held = (torch.arange(r * 2 * chunk, (r + 1) * 2 * chunk) if balancer is None else
                torch.cat([torch.arange(r * chunk, (r + 1) * chunk),
                           torch.arange((2 * cp - 1 - r) * chunk, (2 * cp - r) * chunk)]))
        if not torch.equal(positions[0].long(), held):
            failures.append(f"{case}: positions {positions[0].tolist()[:4]}..., expected {held.tolist()[:4]}...")
            continue
        # each rank's maxima cover its queries against all keys (and its TP groups' heads); MuonClip's MAX over
        # the ranks must give the whole sequence's
        maxima = torch.stack([heads.max_logits for heads in recorder.heads])
        expected_maxima = torch.stack([heads.max_logits for heads in expected_recorder.heads])
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
        try:
            torch.testing.assert_close(local_tokens, tokens[:, held], rtol=0, atol=0)
            torch.testing.assert_close(logits, expected[:, held], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(maxima, expected_maxima, rtol=1e-5, atol=1e-5)
        except AssertionError as error:
            failures.append(f"{case}: {error}")
    return failures


# CP 2 x TP 2 only: the CP plan is applied the same way with and without TP, and each layout compiles flex afresh
# in its own processes (CP 2 alone cost 79 s of CI's time limit for no path that CP 2 x TP 2 does not run)
@pytest.mark.parametrize("world,tp", [(4, 2)], ids=["cp2_x_tp2"])
def test_cp_flex_forward_gives_the_single_rank_logits(tmp_path, world, tp):
    run_on_gloo_ranks(tmp_path, world, _check_cp_forward, tp, timeout_s=300)


def test_cp_with_sdpa_on_cpu_is_refused_before_training(tmp_path):
    with pytest.raises(AssertionError) as failed:
        run_training(tmp_path / "run", 2, "--parallelism.context_parallel_degree", "2",
                     "--parallelism.data_parallel_shard_degree", "1", "--training.steps", "1")
    assert ("parallelism.context_parallel_degree = 2 on cpu: ring attention for SDPA runs CUDA attention kernels "
            "(flash / efficient / cuDNN) only; allowed on cpu: 1") in str(failed.value)


two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="context parallel training needs 2 CUDA GPUs")


@two_gpus
@pytest.mark.parametrize("variant", [
    [],
    ["--compile.enable", "--compile.components", "model,loss"],
    # slow: TorchTitan compiles flex attention with max-autotune, about a minute per attention shape and pass
    ["--model.flavor", "debugmodel_flex_attn", "--training.seq_len", "512"],
], ids=["sdpa", "sdpa_compiled", "flex_block_causal"])
def test_cp2_training_run_logs_the_single_gpu_losses(tmp_path, seed_checkpoint, variant):
    """fp32 (the debug TOML's), so SDPA runs the efficient kernel on both sides; ring attention and the head-tail
    shards reorder sums only."""
    reference = run_training(tmp_path / "single", 1, *SHORT_RUN, *from_seed(seed_checkpoint), *variant)
    losses, log = run_training(tmp_path / "cp", 2, *SHORT_RUN, *from_seed(seed_checkpoint), *variant,
                               "--parallelism.context_parallel_degree", "2",
                               "--parallelism.data_parallel_shard_degree", "1", return_log=True)
    assert "Applied Context Parallel to the model" in log
    assert sorted(losses) == sorted(reference) == [1, 2, 3, 4]
    for step, loss in reference.items():
        assert float(losses[step]) == pytest.approx(float(loss), rel=2e-4), (step, losses, reference)


@two_gpus
def test_cp2_muonclip_run_tracks_the_single_gpu_run(tmp_path, seed_checkpoint):
    """ParallelMuon + MuonClip under CP 2 on GPUs (ring attention; the max-logit recording gathers the keys)."""
    check_muonclip_run_tracks_single_rank(tmp_path, seed_checkpoint, 2, "--parallelism.context_parallel_degree", "2",
                                          "--parallelism.data_parallel_shard_degree", "1")


