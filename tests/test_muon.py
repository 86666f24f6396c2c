"""Muon modes against torch.optim.Muon on the full matrices (and the AdamW group against torch.optim.AdamW),
single-device and as real multi-process gloo runs over FSDP, HSDP and TP x FSDP layouts."""

import traceback

import pytest
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from motif_titan.optim.assignment import assign_owners
from motif_titan.optim.muon import Muon
from motif_titan.optim.newton_schulz import iteration_coefficients, newton_schulz_flops, zeropower_via_newton_schulz

from gloo_ranks import run_on_gloo_ranks

LR, WD, MOMENTUM = 0.02, 0.1, 0.95
# tall, wide, square, tiny and odd shapes: uneven shards and matrices smaller than the group
SHAPES = [(16, 24), (24, 8), (12, 12), (5, 7), (3, 4), (1, 8), (9, 16)]
VECTOR_SHAPES = [(24,), (7,)]
STEPS = 2


def _full_tensors(seed: int):
    gen = torch.Generator().manual_seed(seed)
    mats = [torch.randn(s, generator=gen) for s in SHAPES]
    vecs = [torch.randn(s, generator=gen) for s in VECTOR_SHAPES]
    grads = [[torch.randn(t.shape, generator=gen) for t in mats + vecs] for _ in range(STEPS)]
    return mats, vecs, grads


def _reference(seed: int, adjust_lr: str = "match_rms_adamw"):
    """torch.optim.Muon and torch.optim.AdamW on the full tensors, STEPS steps."""
    mats, vecs, grads = _full_tensors(seed)
    mats = [m.clone().requires_grad_() for m in mats]
    vecs = [v.clone().requires_grad_() for v in vecs]
    muon = torch.optim.Muon(mats, lr=LR, weight_decay=WD, momentum=MOMENTUM, nesterov=True,
                            adjust_lr_fn=adjust_lr)
    adamw = torch.optim.AdamW(vecs, lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=WD)
    for step_grads in grads:
        for p, g in zip(mats + vecs, step_grads):
            p.grad = g.clone()
        muon.step()
        adamw.step()
    return [m.detach() for m in mats], [v.detach() for v in vecs]


def _run_ours(seed: int, make_param, **muon_kwargs):
    mats, vecs, grads = _full_tensors(seed)
    mats = [make_param(m) for m in mats]
    vecs = [make_param(v) for v in vecs]
    opt = Muon(mats, vecs, lr=LR, weight_decay=WD, momentum=MOMENTUM, nesterov=True, adamw_betas=(0.9, 0.95),
               adamw_eps=1e-8, **muon_kwargs)
    for step_grads in grads:
        for p, g in zip(mats + vecs, step_grads):
            p.grad = make_param(g).detach()
        opt.step()
    full = [p.full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in mats + vecs]
    return full[:len(SHAPES)], full[len(SHAPES):]


def _assert_matches_reference(mats, vecs, ref_mats, ref_vecs, what: str):
    for shape, got, want in zip(SHAPES, mats, ref_mats):
        # Newton-Schulz runs in bf16 in both; identical inputs give identical results here, but allow bf16 noise
        # of the largest update (lr * 0.2 * sqrt(max dim) * |O| <= ~0.03) in case a backend reorders a matmul
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4, msg=lambda m: f"{what}, matrix {shape}: {m}")
    for got, want in zip(vecs, ref_vecs):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=lambda m: f"{what}, AdamW vector: {m}")


def test_single_device_matches_torch_muon_and_adamw():
    ref_mats, ref_vecs = _reference(seed=0)
    mats, vecs = _run_ours(0, lambda t: t.clone().requires_grad_(), mode="single")
    _assert_matches_reference(mats, vecs, ref_mats, ref_vecs, "single")
    for got, want in zip(mats, ref_mats):
        assert torch.equal(got, want)


def test_original_lr_rule_matches_torch_muon():
    ref_mats, _ = _reference(seed=1, adjust_lr="original")
    mats, _ = _run_ours(1, lambda t: t.clone().requires_grad_(), mode="single", adjust_lr="original")
    for got, want in zip(mats, ref_mats):
        assert torch.equal(got, want)


def test_motif_coefficients_orthogonalize():
    g = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    for name in ("keller", "motif"):
        o = zeropower_via_newton_schulz(g, iteration_coefficients(name, 5)).float()
        singular = torch.linalg.svdvals(o)
        assert singular.min() > 0.5 and singular.max() < 1.5, (name, singular)
    assert iteration_coefficients("motif", 5)[0] == (4.0848, -6.8946, 2.9270)
    assert iteration_coefficients("keller", 5) == [(3.4445, -4.7750, 2.0315)] * 5
    with pytest.raises(ValueError, match=r"optimizer.ns_coefficients = 'kimi'; allowed: \['keller', 'motif'\]"):
        iteration_coefficients("kimi", 5)


def test_assignments_balance_flops():
    costs = [newton_schulz_flops(*s, 5) for s in [(64, 64), (64, 256), (256, 64), (32, 32), (128, 128), (8, 8)]]
    order, owners = assign_owners(costs, 2, "flops_round_robin")
    assert [costs[i] for i in order] == sorted(costs, reverse=True)
    assert owners[order[0]] == 0 and owners[order[1]] == 1 and owners[order[2]] == 0
    _, lpt = assign_owners(costs, 2, "lpt")
    loads = [sum(c for c, o in zip(costs, lpt) if o == r) for r in range(2)]
    rr_loads = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(2)]
    assert max(loads) <= max(rr_loads)
    assert newton_schulz_flops(64, 256, 1) == 4 * 64 * 64 * 256 + 2 * 64 ** 3


# ---- multi-process -----------------------------------------------------------------------------------------

MODES = {
    "distributed": dict(mode="distributed", chunk_size=3),
    "parallel": dict(mode="parallel", pipeline=False),
    "parallel_pipelined_rr": dict(mode="parallel", pipeline=True, chunk_size=2, assignment="round_robin"),
    "parallel_pipelined_flops": dict(mode="parallel", pipeline=True, chunk_size=2, assignment="flops_round_robin"),
    "parallel_pipelined_lpt": dict(mode="parallel", pipeline=True, chunk_size=3, assignment="lpt"),
}


def _layouts(world: int):
    if world == 2:
        return {"fsdp2": ((2,), ("dp_shard",), [Shard(0)])}
    if world == 8:
        return {"tp2_x_hsdp2x2": ((2, 2, 2), ("dp_replicate", "dp_shard", "tp"), [Replicate(), Shard(0), Shard(1)])}
    return {
        "fsdp4": ((4,), ("dp_shard",), [Shard(0)]),
        "hsdp2x2": ((2, 2), ("dp_replicate", "dp_shard"), [Replicate(), Shard(0)]),
        "tp2_shard1_x_fsdp2": ((2, 2), ("dp_shard", "tp"), [Shard(0), Shard(1)]),
        "tp2_shard0_x_fsdp2": ((2, 2), ("dp_shard", "tp"), [Shard(0), Shard(0)]),
    }


def _check_sharded_modes(rank: int, world: int) -> list[str]:
    failures = []
    ref_mats, ref_vecs = _reference(seed=7)
    for layout_name, (mesh_shape, names, placements) in _layouts(world).items():
        mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=names)

        def make_param(t, placements=placements, mesh=mesh):
            ps = placements if t.ndim == 2 else [p if not isinstance(p, Shard) else Shard(0) for p in placements]
            return torch.nn.Parameter(distribute_tensor(t.clone(), mesh, ps))

        results = {}
        modes = MODES if world < 8 else {k: MODES[k] for k in ("distributed", "parallel",
                                                              "parallel_pipelined_flops")}
        for mode_name, kwargs in modes.items():
            what = f"{layout_name} / {mode_name}"
            try:
                mats, vecs = _run_ours(7, make_param, **kwargs)
                _assert_matches_reference(mats, vecs, ref_mats, ref_vecs, what)
                results[mode_name] = mats
            except Exception:
                failures.append(f"{what}:\n{traceback.format_exc()}")
        if "parallel" in results:
            for name in ("parallel_pipelined_rr", "parallel_pipelined_flops", "parallel_pipelined_lpt"):
                if name in results and not all(torch.equal(a, b) for a, b in zip(results[name],
                                                                                 results["parallel"])):
                    failures.append(f"{layout_name}: {name} differs from the non-pipelined run")
    return failures


@pytest.mark.parametrize("world", [2, 4, 8])
def test_sharded_modes_match_full_matrix_reference(tmp_path, world):
    run_on_gloo_ranks(tmp_path, world, _check_sharded_modes, timeout_s=60)  # a broken exchange fails, not hangs
