"""The cost of GDA's 2*head_dim-wide values: two attention calls over the V halves (QK^T and softmax computed twice)
against one call with the 2d-wide V, forward + backward, for the signal and the noise attention of one layer.

    python benchmarks/gda_attention.py --out gda_attention.json

Layouts: Motif-2-12.7B (32 signal + 8 noise q heads, 8 groups, head_dim 128) and the "1B" flavor (16 + 4, 4 groups),
bf16, batch 2, sequence 4096, causal (SDPA) and block-causal (FlexAttention, compiled, 4 documents per row).
Each one-call result is checked against the two-call result first. Timing: CUDA events, median of 20 after 5 warm-up
iterations; the SDPA backend torch picks is recorded.
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

LAYOUTS = {"12.7B": (32, 8), "1B": (16, 4)}  # signal heads, groups


def sdpa(q, k, v, _mask):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def two_calls(attend):
    def run(q, k, v, mask):
        v1, v2 = v.chunk(2, dim=-1)
        return torch.cat([attend(q, k, v1.contiguous(), mask), attend(q, k, v2.contiguous(), mask)], dim=-1)
    return run


def timed(fn, q, k, v, mask, iters=20) -> float:
    def step():
        out = fn(q, k, v, mask)
        out.backward(torch.ones_like(out))
    for _ in range(5):
        step()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def attention_kernels(fn, q, k, v, mask) -> list[str]:
    """Names of the attention kernels one forward + backward launches (which SDPA backend torch picked)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = fn(q, k, v, mask)
        out.backward(torch.ones_like(out))
        torch.cuda.synchronize()
    keys = ("flash", "fmha", "cudnn", "attention", "attn", "triton_tem")
    return sorted({e.key[:80] for e in prof.key_averages() if any(x in e.key.lower() for x in keys)})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--out", default="gda_attention.json")
    args = parser.parse_args()
    d, results = 128, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": []}
    flex = torch.compile(flex_attention)
    doc_len = args.seq // 4
    block_mask = create_block_mask(lambda b, h, q, kv: (q >= kv) & (q // doc_len == kv // doc_len), None, None,
                                   args.seq, args.seq)

    def flex_attend(q, k, v, mask):
        return flex(q, k, v, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])

    for layout, (signal_heads, groups) in LAYOUTS.items():
        for kind, heads in (("signal", signal_heads), ("noise", groups)):
            for backend, attend, mask in (("sdpa", sdpa, None), ("flex", flex_attend, block_mask)):
                gen = torch.Generator(device="cuda").manual_seed(0)
                q = torch.randn(args.batch, heads, args.seq, d, device="cuda", generator=gen, dtype=torch.bfloat16)
                k = torch.randn(args.batch, groups, args.seq, d, device="cuda", generator=gen, dtype=torch.bfloat16)
                v = torch.randn(args.batch, groups, args.seq, 2 * d, device="cuda", generator=gen,
                                dtype=torch.bfloat16)
                q, k, v = (t.requires_grad_() for t in (q, k, v))
                case = {"layout": layout, "attention": kind, "backend": backend}
                with torch.no_grad():
                    reference = two_calls(attend)(q, k, v, mask).float()
                    try:
                        single = attend(q, k, v, mask).float()
                        case["one_call_max_abs_diff"] = (single - reference).abs().max().item()
                    except Exception as error:  # a backend that cannot take d_v != d_qk
                        case["one_call_error"] = f"{type(error).__name__}: {str(error)[:200]}"
                case["two_calls_ms"] = timed(two_calls(attend), q, k, v, mask)
                case["two_calls_kernels"] = attention_kernels(two_calls(attend), q, k, v, mask)
                if "one_call_error" not in case:
                    try:
                        case["one_call_ms"] = timed(attend, q, k, v, mask)
                        case["one_call_kernels"] = attention_kernels(attend, q, k, v, mask)
                        case["speedup"] = case["two_calls_ms"] / case["one_call_ms"]
                    except Exception as error:  # e.g. a compiled backward that does not fit shared memory
                        case["one_call_error"] = f"{type(error).__name__}: {str(error)[-300:]}"
                results["cases"].append(case)
                print(json.dumps(case), flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
