"""Muon modes against torch.optim.Muon on the full matrices (and the AdamW group against torch.optim.AdamW),
single-device and as real multi-process gloo runs on the layouts TorchTitan builds: TP by ``parallelize_module``
(ColwiseParallel / RowwiseParallel) and FSDP / HSDP by ``fully_shard``, so TP x FSDP parameters carry FSDP2's
``_StridedShard`` placements. Gradients come from a real backward through those layouts."""


import pytest
import torch
from torch import Tensor, nn

from motif_titan.optim.assignment import assign_owners
from motif_titan.optim.muon import Muon
from motif_titan.optim.newton_schulz import iteration_coefficients, newton_schulz_flops, zeropower_via_newton_schulz

from helpers.muon_reference import LR, MOMENTUM, SHAPES, WD, full_tensors, torch_reference




def _run_ours(seed: int, make_param, **muon_kwargs):
    mats, vecs, grads = full_tensors(seed)
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
    ref_mats, ref_vecs = torch_reference(seed=0)
    mats, vecs = _run_ours(0, lambda t: t.clone().requires_grad_(), mode="single")
    _assert_matches_reference(mats, vecs, ref_mats, ref_vecs, "single")
    for got, want in zip(mats, ref_mats):
        assert torch.equal(got, want)


def test_original_lr_rule_matches_torch_muon():
    ref_mats, _ = torch_reference(seed=1, adjust_lr="original")
    mats, _ = _run_ours(1, lambda t: t.clone().requires_grad_(), mode="single", adjust_lr="original")
    for got, want in zip(mats, ref_mats):
        assert torch.equal(got, want)


def test_stage_without_muon_matrices_saves_and_loads_through_dcp():
    """A pipeline stage holding only the final norm and the head has no Muon matrix: its optimizer keeps an empty
    Muon group (the LR schedulers need the same groups in every part). TorchTitan loads optimizers through DCP's
    flattened state dict, whose unflattening cannot read an empty group; the container hides it while loading.
    Reference: the saved part states, restored value for value into freshly built optimizers."""
    from motif_titan.optim.builder import MuonOptimizersContainer

    def parts():
        torch.manual_seed(0)
        body = nn.ModuleDict({"wq": nn.Linear(8, 8, bias=False), "norm": nn.LayerNorm(8)})
        last = nn.ModuleDict({"norm": nn.LayerNorm(8), "output": nn.Linear(8, 16, bias=False)})
        return [body, last]

    def build(models):
        return MuonOptimizersContainer(models, {"lr": 0.02, "weight_decay": 0.1, "mode": "single"},
                                       ["output", "norm"])

    models = parts()
    trained = build(models)
    assert [len(g["params"]) for g in trained.optimizers[1].param_groups] == [0, 3]  # (Muon, AdamW: norm weight + bias, head)
    for _ in range(2):
        for m in models:
            for p in m.parameters():
                p.grad = torch.randn_like(p)
        trained.step()
    saved = {k: v.clone() if isinstance(v, Tensor) else v for k, v in trained.state_dict().items()}
    assert any(".output.weight." in k or k.endswith("output.weight.exp_avg") for k in saved), sorted(saved)

    fresh = build(parts())
    fresh.load_state_dict(saved)
    assert fresh.state_dict().keys() == saved.keys()
    for key, value in fresh.state_dict().items():
        if isinstance(value, Tensor):
            assert torch.equal(value, saved[key]), key
        else:
            assert value == saved[key], key
    # the empty group is back in its place, and the inner AdamW steps the loaded state
    last = fresh.optimizers[1]
    assert [(g["use_muon"], len(g["params"])) for g in last.param_groups] == [(True, 0), (False, 3)]
    assert last._adamw.param_groups == [last.param_groups[1]]
    assert last.state[fresh.model_parts[1]["output"].weight]["step"] == 2


def test_motif_coefficients_orthogonalize():
    g = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    for name in ("keller", "motif", "polar_express"):
        o = zeropower_via_newton_schulz(g, iteration_coefficients(name, 5)).float()
        singular = torch.linalg.svdvals(o)
        assert singular.min() > 0.5 and singular.max() < 1.5, (name, singular)
    assert iteration_coefficients("motif", 5)[0] == (4.0848, -6.8946, 2.9270)
    assert iteration_coefficients("keller", 5) == [(3.4445, -4.7750, 2.0315)] * 5
    assert iteration_coefficients("polar_express", 6)[0][0] == 8.156554524902461
    assert iteration_coefficients("polar_express", 6)[5] == iteration_coefficients("polar_express", 5)[4]
    with pytest.raises(ValueError, match=r"optimizer.ns_coefficients = 'kimi'; allowed: \['keller', 'motif', "
                                         r"'polar_express'\]"):
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




























