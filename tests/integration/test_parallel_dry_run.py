"""Dry runs of 12.7B layouts (64 simulated GPUs) on one CPU process: TorchTitan's fake communication backend
(``--comm.mode fake_backend`` uses the same process group) plus FakeTensorMode, so the full 12.7B model is built,
validated by update_from_config, parallelized by motif2's own parallelize_fn / pipelining_fn, and run forward and
backward at seq_len 4096 without allocating a single real weight. The simulated rank is not rank 0, so the shard
offsets are exercised: rank 45 of (pp 4, dp_shard 2, tp 8) is pp 2, fsdp 1, tp 5.

What is checked: every parameter's global shape, its tensor-parallel placement (GDA groups whole on each rank),
the q-head offset MuonClip uses, the vocab-sharded logits for loss parallel, a gradient for every parameter, and
the optimizer of every 12.7B stage TOML built on the layout, with one ParallelMuon step on the fake gradients.
(TorchTitan's trainer itself also runs the 12.7B TP 8 x FSDP 8 layout under ``--comm.mode fake_backend`` on CPU,
but one step takes minutes and ~7 GiB, too heavy for the test suite; the command is in the report.)
"""

import copy
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import loss_parallel

from helpers.launch import DEBUG_TOML, REPO

TOML_12_7B = sorted((REPO / "train_configs").glob("motif2_12.7B_*.toml"))  # pretrain, anneal, sft1..3

SEQ = 4096
LAYOUTS = {
    # name: (world size, simulated rank, CLI overrides)
    "tp8_x_fsdp8": (64, 13, ["--parallelism.tensor_parallel_degree", "8",
                             "--parallelism.data_parallel_shard_degree", "8"]),
    "tp8_x_hsdp2x4": (64, 13, ["--parallelism.tensor_parallel_degree", "8",
                               "--parallelism.data_parallel_replicate_degree", "2",
                               "--parallelism.data_parallel_shard_degree", "4"]),
    "pp4_x_fsdp2_x_tp8": (64, 45, ["--parallelism.tensor_parallel_degree", "8",
                                   "--parallelism.data_parallel_shard_degree", "2",
                                   "--parallelism.pipeline_parallel_degree", "4",
                                   "--parallelism.pipeline_parallel_schedule", "1F1B",
                                   "--parallelism.pipeline_parallel_microbatch_size", "1",
                                   "--training.local_batch_size", "4"]),
}
TP_SHARD_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "wo": 1, "w2": 1, "output": 0, "tok_embeddings": 0}


def _expected_tp_placement(name: str):
    for key, dim in TP_SHARD_DIM.items():
        if f"{key}.weight" in name:
            return Shard(dim)
    return Replicate()  # norms, lambda vectors, subln, PolyNorm


def _dry_run(world: int, rank: int, cli: list[str]) -> None:
    import torchtitan.distributed.parallel_dims as parallel_dims_module
    from torchtitan.components.loss import build_cross_entropy_loss
    from torchtitan.config import ConfigManager
    from torchtitan.distributed import ParallelDims

    from motif_titan.infra.parallelize import parallelize_motif2
    from torchtitan.distributed.pipeline_parallel import pipeline_llm
    from motif_titan.model import Motif2Model, motif2_args

    parallel_dims_module.device_type = "cpu"  # this process only: meshes on the CPU (TorchTitan assumes CUDA)
    dist.init_process_group("fake", rank=rank, world_size=world)
    try:
        job = ConfigManager().parse_args(["--job.config_file", str(DEBUG_TOML), "--model.flavor", "12.7B",
                                          "--training.seq_len", str(SEQ), "--training.local_batch_size", "1", *cli])
        model_args = copy.deepcopy(motif2_args["12.7B"])
        model_args.update_from_config(job)
        par = job.parallelism
        parallel_dims = ParallelDims(dp_replicate=par.data_parallel_replicate_degree,
                                     dp_shard=par.data_parallel_shard_degree, cp=1,
                                     tp=par.tensor_parallel_degree, pp=par.pipeline_parallel_degree, ep=1, etp=1,
                                     world_size=world)
        parallel_dims.build_mesh()
        with torch.device("meta"):
            model = Motif2Model(model_args)
        shapes = {name: p.shape for name, p in model.named_parameters()}
        assert sum(s.numel() for s in shapes.values()) == 12_703_860_896

        if parallel_dims.pp_enabled:
            _, parts, has_first, has_last = pipeline_llm(
                model, parallel_dims, job, torch.device("cpu"), model_args, parallelize_motif2,
                build_cross_entropy_loss(job))
            assert len(parts) == 1 and not has_first and not has_last  # pp rank 2 of 4: a middle stage
            model = parts[0]
            assert model.tok_embeddings is None and model.norm is None and model.output is None
            layer_ids = [int(k) for k in model.layers]
            assert layer_ids == list(range(layer_ids[0], layer_ids[0] + len(layer_ids))) and 0 < layer_ids[0]
            assert layer_ids[-1] < model_args.n_layers - 1
        else:
            model = parallelize_motif2(model, parallel_dims, job)

        tp_mesh = parallel_dims.get_mesh("tp")
        tp_rank = tp_mesh.get_local_rank()
        assert tp_rank == rank % 8
        params = dict(model.named_parameters())
        for name, param in params.items():
            assert isinstance(param, DTensor), name
            assert param.shape == shapes[name], (name, param.shape, shapes[name])
            tp_dim = param.device_mesh.mesh_dim_names.index("tp")
            assert param.placements[tp_dim] == _expected_tp_placement(name), (name, param.placements)

        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        with fake_mode:
            model.to_empty(device="cpu")
            if model.tok_embeddings is not None:
                out = model(torch.zeros((1, SEQ), dtype=torch.long))
                assert isinstance(out, DTensor) and out.placements == (Shard(2),)  # loss parallel: vocab shards
                assert out.shape == (1, SEQ, model_args.vocab_size)
                with loss_parallel():
                    F.cross_entropy(out.flatten(0, 1), torch.zeros(SEQ, dtype=torch.long), reduction="sum").backward()
            else:  # a middle stage gets this rank's sequence shard of the hidden state
                out = model(torch.zeros((1, SEQ // 8, model_args.dim), requires_grad=True))
                assert out.shape == (1, SEQ // 8, model_args.dim)
                out.sum().backward()
            missing = [name for name, p in params.items() if p.grad is None]
            assert not missing, missing
            assert all(p.grad.to_local().shape == p.to_local().shape for p in params.values())
        _build_and_step_optimizers(model, parallel_dims, cli, fake_mode)
    finally:
        dist.destroy_process_group()


def _build_and_step_optimizers(model, parallel_dims, cli: list[str], fake_mode: FakeTensorMode) -> None:
    """The optimizer of every 12.7B stage TOML's [optimizer] section (on TP 8 x FSDP 8; the pretraining one on the
    other layouts), built for this layout's model part (every
    parameter's shard layout is read at build time), then one step of the pretraining stage's ParallelMuon on the
    fake gradients: owners, the block exchange (batch_isend_irecv on the fake backend moves no data), Newton-Schulz
    on the full fake matrices, the local update. What the fake run cannot do: MuonClip's clipping reads the
    reduced max logits as Python numbers (``tolist``), which fake tensors do not have, so the step runs the Muon
    and AdamW groups and MuonClip is exercised by the gloo runs."""
    from torchtitan.config import ConfigManager

    from motif_titan.optim.builder import MuonOptimizersContainer, build_muon_optimizers

    built = {}
    # every stage TOML on the first layout; the pretraining TOML on the others (CI time)
    tomls = TOML_12_7B if "--parallelism.data_parallel_replicate_degree" not in cli and \
        "--parallelism.pipeline_parallel_degree" not in cli else [t for t in TOML_12_7B if "pretrain" in t.name]
    for toml in tomls:
        job = ConfigManager().parse_args(["--job.config_file", str(toml), "--training.seq_len", str(SEQ), *cli])
        container = build_muon_optimizers([model], job.optimizer, parallel_dims)
        built[toml.stem] = (job.optimizer, container)
        assert isinstance(container, MuonOptimizersContainer), toml.name
    optimizer_config, container = built["motif2_12.7B_pretrain"]
    assert (optimizer_config.name, optimizer_config.qk_clip_threshold) == ("ParallelMuon", 100.0)
    # MuonClip's recorder: the layers held here, each rank's maxima at its q heads' global index
    tp_rank = parallel_dims.get_mesh("tp").get_local_rank()
    assert [h.layer_index for h in container.max_logits.heads] == [int(k) for k in model.layers]
    assert all(h.q_head_offset == tp_rank * 5 for h in container.max_logits.heads)  # one GDA group (4 + 1) per rank
    muon = container.optimizers[0]
    groups = {g["use_muon"]: g for g in muon.param_groups}
    assert len(groups[True]["params"]) == 7 * len(model.layers)  # wq wk wv wo w1 w2 w3 of every block held here
    before = {id(p): p.to_local().shape for p in groups[True]["params"]}
    with fake_mode:  # built outside it (the mesh's rank tensor is real), stepped inside (the state is fake)
        muon.step()  # Muon.step: the Muon group by ParallelMuon, the AdamW group by the inner AdamW
    assert all(muon.state[p]["momentum_buffer"].to_local().shape == before[id(p)] for p in groups[True]["params"])


def _worker(_: int, layout: str, result_file: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        _dry_run(*LAYOUTS[layout])
    except Exception:
        with open(result_file, "w") as f:
            f.write(traceback.format_exc())


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_12_7b_layout_builds_and_runs_forward_backward_on_fake_backend(tmp_path, layout):
    """One fresh process per layout: a fake process group leaves named groups behind after it is destroyed."""
    result = tmp_path / "failures"
    mp.spawn(_worker, args=(layout, str(result)), nprocs=1, join=True)
    assert not result.exists(), result.read_text()


def test_12_7b_tp16_is_refused_before_anything_is_built():
    from torchtitan.config import ConfigManager

    from motif_titan.infra.job_rules import check_tensor_parallel
    from motif_titan.model import motif2_args

    job = ConfigManager().parse_args(["--job.config_file", str(DEBUG_TOML), "--model.flavor", "12.7B",
                                      "--parallelism.tensor_parallel_degree", "16"])
    with pytest.raises(ValueError, match=r"must divide n_noise_heads = 8 \(the number of groups\).*allowed: "
                                         r"\[1, 2, 4, 8\]"):
        check_tensor_parallel(motif2_args["12.7B"], job)
