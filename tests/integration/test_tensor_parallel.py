"""Tensor parallelism for Motif-2 on gloo: TP 2 and TP 2 x FSDP 2 give the single-rank model's logits, loss,
every parameter's gradient and MuonClip's per-head max logits (fp64), for GDA (ratio 2, 2 groups per rank) and
for the tied-embedding Differential Attention layout (ratio 1). Plus the TP-aware PolyNorm alone. Trained through
TorchTitan's trainer, TP is a composition-matrix row: PP 2 x TP 2 (TP-only placements in each stage) and TP 2 x
FSDP 2 (tests/integration/test_composition_matrix.py)."""

import copy
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import loss_parallel

from motif_titan.infra.parallelize import apply_fsdp, apply_tp
from motif_titan.infra.tensor_parallel_polynorm import TensorParallelPolyNorm
from motif_titan.kernels import poly_norm_mul_reference
from motif_titan.model import Motif2Model, Motif2ModelArgs, PolyNorm
from motif_titan.optim.max_logits import MaxLogitRecorder

from helpers.gloo_ranks import run_on_gloo_ranks

TINY = dict(dim=32, n_layers=2, head_dim=8, ffn_hidden_dim=64, vocab_size=96, max_seq_len=32, rope_theta=10_000.0)
LAYOUTS = {
    # 4 groups of 2 signal heads + 1 noise head: TP 2 keeps 2 whole groups per rank
    "gda_ratio2": Motif2ModelArgs(**TINY, n_heads=12, n_noise_heads=4, n_kv_heads=8),
    # Differential Attention (ratio 1) with tied embedding / output head, as Motif-2.6B
    "diffattn_tied": Motif2ModelArgs(**TINY, n_heads=8, n_noise_heads=4, n_kv_heads=8, enable_weight_tying=True),
}
BATCH, SEQ = 4, 16


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def _run(model: Motif2Model, tokens: torch.Tensor, labels: torch.Tensor, tp_mesh=None):
    recorder = MaxLogitRecorder(model.attention_layers(), model.n_layers, tp_mesh=tp_mesh)
    logits = model(tokens)
    with loss_parallel():
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        loss.backward()
    maxima = torch.stack([heads.max_logits for heads in recorder.heads])
    return _full(logits).detach(), _full(loss).detach(), maxima


def _check_layout(name: str, args: Motif2ModelArgs, dp: int, tp: int) -> None:
    torch.manual_seed(0)
    reference = Motif2Model(args).double()  # the lambda vectors too (fp32 by design): FSDP wants one dtype
    with torch.no_grad():
        reference.init_weights()
    model = copy.deepcopy(reference)
    tokens = torch.randint(0, args.vocab_size, (BATCH, SEQ))
    labels = torch.randint(0, args.vocab_size, (BATCH, SEQ))

    if dp > 1:
        mesh = init_device_mesh("cpu", (dp, tp), mesh_dim_names=("fsdp", "tp"))
        tp_mesh, dp_mesh = mesh["tp"], mesh["fsdp"]
    else:
        tp_mesh, dp_mesh = init_device_mesh("cpu", (tp,), mesh_dim_names=("tp",)), None
    apply_tp(model, tp_mesh, loss_parallel=True)
    if dp_mesh is not None:
        apply_fsdp(model, dp_mesh, param_dtype=torch.float64, reduce_dtype=torch.float64)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_force_sum_reduction_for_comms(True)  # gloo has no AVG / PREMUL_SUM
    rows = slice(dp_mesh.get_local_rank(), None, dp) if dp_mesh is not None else slice(None)

    ref_logits, ref_loss, ref_maxima = _run(reference, tokens, labels)
    logits, loss, maxima = _run(model, tokens[rows], labels[rows], tp_mesh)
    attention = model.layers["0"].attention
    assert attention.wq.weight.placements[-1] == Shard(0) and attention.wo.weight.placements[-1] == Shard(1)

    torch.testing.assert_close(logits, ref_logits[rows], rtol=1e-9, atol=1e-9, msg=f"{name}: logits")
    loss_sum = loss.clone()
    if dp_mesh is not None:
        dist.all_reduce(loss_sum, group=dp_mesh.get_group())
    torch.testing.assert_close(loss_sum, ref_loss, rtol=1e-10, atol=0.0, msg=f"{name}: loss")
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX)  # what MuonClip does: every head comes from its owner rank
    torch.testing.assert_close(maxima, ref_maxima, rtol=1e-10, atol=0.0, msg=f"{name}: max logits")

    ref_params = dict(reference.named_parameters())
    params = dict(model.named_parameters())
    assert sorted(params) == sorted(ref_params)
    if args.enable_weight_tying:
        assert model.output.weight is model.tok_embeddings.weight
    for pname, param in params.items():
        assert isinstance(param, DTensor), f"{name}: {pname} is not a DTensor (clip_grad_norm needs one kind)"
        torch.testing.assert_close(_full(param.grad), ref_params[pname].grad, rtol=1e-8, atol=1e-10,
                                   msg=f"{name}: grad of {pname}")


def _check_layouts(rank: int, world: int, tp: int) -> list[str]:
    torch.set_default_dtype(torch.float64)
    failures = []
    for name, args in LAYOUTS.items():
        try:
            _check_layout(name, args, dp=world // tp, tp=tp)
        except Exception:
            failures.append(f"{name}:\n{traceback.format_exc()}")
    return failures


@pytest.mark.parametrize("world,tp", [(2, 2), (4, 2)], ids=["tp2", "tp2_x_fsdp2"])
def test_tensor_parallel_matches_single_rank_model(tmp_path, world, tp):
    run_on_gloo_ranks(tmp_path, world, _check_layouts, tp)


def _check_sharded_polynorm(rank: int, world: int) -> None:
    """TensorParallelPolyNorm on each rank's half of the hidden dim equals PolyNorm on whole rows (values and
    gradients of x, mul, weight, bias), in fp64, eager and compiled."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(3)
    x, mul, g = (torch.randn(3, 5, 12) for _ in range(3))
    weight, bias = torch.tensor([0.7, -0.4, 1.3]), torch.tensor([0.25])
    ref_leaves = [t.clone().requires_grad_() for t in (x, mul, weight, bias)]
    (poly_norm_mul_reference(*ref_leaves, 1e-6) * g).sum().backward()

    mesh = init_device_mesh("cpu", (2,))
    half = slice(6 * rank, 6 * rank + 6)
    poly = PolyNorm(1e-6).double()  # fp32 parameters by design; fp64 here for a tight comparison
    poly.weight.data.copy_(weight)
    poly.bias.data.copy_(bias)
    sharded = TensorParallelPolyNorm(poly, mesh)
    assert sharded.weight is poly.weight and sharded.bias is poly.bias
    # eager, then traced by torch.compile (AOTAutograd, no codegen): the differentiable all-reduce must trace
    for forward in (sharded, torch.compile(sharded, backend="aot_eager", fullgraph=True)):
        poly.zero_grad()
        xs, ms = x[..., half].clone().requires_grad_(), mul[..., half].clone().requires_grad_()
        y = forward(xs, ms)
        (y * g[..., half]).sum().backward()
        torch.testing.assert_close(y, poly_norm_mul_reference(x, mul, weight, bias, 1e-6)[..., half])
        torch.testing.assert_close(xs.grad, ref_leaves[0].grad[..., half])
        torch.testing.assert_close(ms.grad, ref_leaves[1].grad[..., half])
        for param, ref in ((poly.weight, ref_leaves[2]), (poly.bias, ref_leaves[3])):
            total = param.grad.clone()
            dist.all_reduce(total)  # plain parameters: each rank holds its channels' partial sum
            torch.testing.assert_close(total, ref.grad)


def test_tensor_parallel_polynorm_matches_whole_rows(tmp_path):
    run_on_gloo_ranks(tmp_path, 2, _check_sharded_polynorm)
