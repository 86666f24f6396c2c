"""The Muon tests' problem: matrices of awkward shapes, vectors, per-step gradients, and the reference answer of
torch.optim.Muon (matrices) and torch.optim.AdamW (vectors) on the full tensors."""

import torch

LR, WD, MOMENTUM = 0.02, 0.1, 0.95
# tall, wide, square, tiny and odd shapes: uneven shards and matrices smaller than the group
SHAPES = [(16, 24), (24, 8), (12, 12), (5, 7), (3, 4), (1, 8), (9, 16)]
VECTOR_SHAPES = [(24,), (7,)]
STEPS = 2


def full_tensors(seed: int):
    gen = torch.Generator().manual_seed(seed)
    mats = [torch.randn(s, generator=gen) for s in SHAPES]
    vecs = [torch.randn(s, generator=gen) for s in VECTOR_SHAPES]
    grads = [[torch.randn(t.shape, generator=gen) for t in mats + vecs] for _ in range(STEPS)]
    return mats, vecs, grads


def torch_reference(seed: int, adjust_lr: str = "match_rms_adamw"):
    """torch.optim.Muon and torch.optim.AdamW on the full tensors, STEPS steps."""
    mats, vecs, grads = full_tensors(seed)
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
