"""The cost of GDA's 2*head_dim-wide values, forward and backward timed apart, for the signal and the noise attention
of one layer. Paths:

  split        two SDPA calls over the value halves (Q K^T and softmax computed twice; motif2's default for the
               signal attention)
  joint        one SDPA call with the 2d-wide value (motif2's default for the noise attention)
  triton_atomic / triton_separate
               benchmarks/experiments/wide_value_attention.py: Q K^T and softmax once per tile, the whole 2d-wide
               value applied (dQ by atomic adds, or by a separate dQ kernel)
  flex split / flex joint (block-causal, 4 documents per row; compiled FlexAttention)

    python benchmarks/gda_attention.py --out gda_attention.json

Layouts: Motif-2-12.7B (32 signal + 8 noise q heads, 8 groups, head_dim 128) and the "1B" flavor (16 + 4, 4 groups),
bf16, batch 2, sequence 4096. Every path's output and gradients are first compared with an fp32 reference (SDPA on
fp32 inputs: the memory-efficient kernel, not cuDNN). Timing: CUDA events around the forward and around the backward,
median of 20 after 5 warm-up iterations (which include Triton's autotuning). These wall times include the CPU's
launch overhead where the GPU outruns it (small shapes, many calls); ``gpu_ms`` is the profiler's sum of the kernel
times of one forward + backward, which does not. The kernels each path launches are recorded.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, str(Path(__file__).resolve().parent / "experiments"))
import wide_value_attention as wva  # noqa: E402  the experiment, not part of the package

LAYOUTS = {"12.7B": (32, 8), "1B": (16, 4)}  # signal heads, groups


def sdpa(q, k, v, _mask=None):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def split(attend):
    def run(q, k, v, mask=None):
        v1, v2 = v.chunk(2, dim=-1)
        return torch.cat([attend(q, k, v1.contiguous(), mask), attend(q, k, v2.contiguous(), mask)], dim=-1)
    return run


def triton(dq_mode):
    return lambda q, k, v, _mask=None: wva.wide_value_attention(q, k, v, dq_mode=dq_mode)


def timed(fn, q, k, v, mask, grad, iters=20) -> tuple[float, float]:
    fwd, bwd = [], []
    for i in range(iters + 5):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        events[0].record()
        out = fn(q, k, v, mask)
        events[1].record()
        out.backward(grad)
        events[2].record()
        torch.cuda.synchronize()
        if i >= 5:
            fwd.append(events[0].elapsed_time(events[1]))
            bwd.append(events[1].elapsed_time(events[2]))
        q.grad = k.grad = v.grad = None
    return statistics.median(fwd), statistics.median(bwd)


def gpu_time(fn, q, k, v, mask, grad, iters=5) -> tuple[float, list[str]]:
    """GPU kernel time of one forward + backward (ms; the sum over every kernel launched, so CPU launch overhead
    does not count) and the names of the attention kernels launched."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn(q, k, v, mask).backward(grad)
            q.grad = k.grad = v.grad = None
        torch.cuda.synchronize()
    averages = prof.key_averages()
    total_us = sum(e.self_device_time_total for e in averages)
    keys = ("flash", "fmha", "cudnn", "attention", "attn", "triton", "kernel")
    return total_us / iters / 1e3, sorted({e.key[:90] for e in averages if any(x in e.key.lower() for x in keys)})


def errors(fn, q, k, v, mask, grad, reference) -> list[float]:
    """max |x - x_ref| / max |x_ref| of the output, dq, dk, dv."""
    out = fn(q, k, v, mask)
    out.backward(grad)
    got = [out.detach(), q.grad, k.grad, v.grad]
    q.grad = k.grad = v.grad = None
    return [((a.float() - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference)]


def fp32_reference(q, k, v, mask, grad, attend) -> list[torch.Tensor]:
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    out = attend(q32, k32, v32, mask)
    out.backward(grad.float())
    return [out.detach(), q32.grad, k32.grad, v32.grad]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--paths", default="split,joint,triton_atomic,triton_separate,flex_split,flex_joint")
    parser.add_argument("--out", default="gda_attention.json")
    args = parser.parse_args()
    d = 128
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
               "seq": args.seq, "cases": []}
    # one compiled flex_attention serves every shape here (value widths, head counts, the fp32 reference): more
    # recompiles than dynamo's default limit of 8, past which it would run flex uncompiled
    torch._dynamo.config.recompile_limit = 64
    flex = torch.compile(flex_attention)
    doc_len = args.seq // 4
    block_mask = create_block_mask(lambda b, h, q, kv: (q >= kv) & (q // doc_len == kv // doc_len), None, None,
                                   args.seq, args.seq)

    def flex_attend(q, k, v, mask):
        return flex(q, k, v, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])

    paths = {"split": (split(sdpa), None), "joint": (sdpa, None), "triton_atomic": (triton("atomic"), None),
             "triton_separate": (triton("separate"), None),
             "flex_split": (split(flex_attend), block_mask), "flex_joint": (flex_attend, block_mask)}
    wanted = args.paths.split(",")
    for layout, (signal_heads, groups) in LAYOUTS.items():
        for kind, heads in (("signal", signal_heads), ("noise", groups)):
            gen = torch.Generator(device="cuda").manual_seed(0)
            shape = (args.batch, heads, args.seq)
            q = torch.randn(*shape, d, device="cuda", generator=gen, dtype=torch.bfloat16).requires_grad_()
            k = torch.randn(args.batch, groups, args.seq, d, device="cuda", generator=gen, dtype=torch.bfloat16)
            v = torch.randn(args.batch, groups, args.seq, 2 * d, device="cuda", generator=gen, dtype=torch.bfloat16)
            k.requires_grad_(), v.requires_grad_()
            grad = torch.randn(*shape, 2 * d, device="cuda", generator=gen, dtype=torch.bfloat16)
            references = {None: fp32_reference(q, k, v, None, grad, sdpa),
                          "flex": fp32_reference(q, k, v, block_mask, grad, split(flex_attend))}
            for name in wanted:
                fn, mask = paths[name]
                case = {"layout": layout, "attention": kind, "path": name}
                try:
                    case["rel_err_out_dq_dk_dv"] = errors(fn, q, k, v, mask, grad,
                                                          references["flex" if mask is not None else None])
                    case["fwd_ms"], case["bwd_ms"] = timed(fn, q, k, v, mask, grad)
                    case["total_ms"] = case["fwd_ms"] + case["bwd_ms"]
                    case["gpu_ms"], case["kernels"] = gpu_time(fn, q, k, v, mask, grad)
                except Exception as error:  # e.g. a compiled flex backward that does not fit shared memory
                    case["error"] = f"{type(error).__name__}: {str(error)[-300:]}"
                    q.grad = k.grad = v.grad = None
                if name.startswith("triton") and "error" not in case:
                    tuned = {"fwd": wva._fwd_tuned, "dkdv": (wva._dkdv_atomic_tuned if name == "triton_atomic"
                                                               else wva._dkdv_tuned)}
                    if name == "triton_separate":
                        tuned["dq"] = wva._dq_tuned
                    case["triton_configs"] = {key: str(t.best_config) for key, t in tuned.items()}
                results["cases"].append(case)
                print(json.dumps({key: val for key, val in case.items() if key != "kernels"}), flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
