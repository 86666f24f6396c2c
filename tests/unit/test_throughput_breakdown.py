"""The kernel-time breakdown of benchmarks/throughput/breakdown.py on a hand-made profiler trace."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "throughput"))
from breakdown import format_table, kind_of, summarize  # noqa: E402


@pytest.mark.parametrize("name,kind", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x128x128", "attention forward"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_7_64x128x128", "attention backward"),
    ("flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", "attention backward"),
    ("fmha_cutlassF_f32_aligned_64x64_rf_sm80", "attention forward"),
    ("nvjet_tst_256x128_64x4_1x2_h_bz_coopA_TNT", "gemm bf16/fp32"),
    ("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<float_e4m3_t, rowwise>>", "gemm fp8"),
    ("_poly_norm_bwd_kernel", "PolyNorm (Triton kernel)"),
    ("triton_red_fused__to_copy_mean_pow_rsqrt_0", "compiled reductions (norms, loss, amax)"),
    ("triton_poi_fused_cat_mul_neg_1", "compiled pointwise (RoPE, casts, GDA combine, ...)"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdam>", "optimizer (foreach / fused)"),
    ("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL", "nccl (communication)"),
    ("void at::native::vectorized_elementwise_kernel<4, FillFunctor<float>>", "other eager kernels"),
])
def test_kernel_kinds(name, kind):
    assert kind_of(name) == kind


def test_summary_of_one_step(tmp_path):
    kernel = lambda name, ts, dur, stream=7: {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur,  # noqa
                                              "tid": stream}
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#20", "ts": 0, "dur": 2000},
        kernel("nvjet_tst_gemm", 100, 400),
        kernel("flash_fwd_kernel", 600, 200),
        kernel("ncclDevKernel_AllGather", 650, 300, stream=9),  # overlaps the attention kernel
        kernel("nvjet_tst_gemm", 1000, 100),
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "ts": 1200, "dur": 100},
    ]
    trace = tmp_path / "rank0_trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    summary = summarize(trace)
    # span 100 .. 1300; busy = 400 + (600..950) + 100 + 100 = 950 us
    assert summary["per_step_ms"]["gpu_span"] == 1.2
    assert summary["per_step_ms"]["gpu_busy"] == 0.95
    assert summary["per_step_ms"]["gpu_idle"] == 0.25
    assert summary["per_step_ms"]["kinds"] == {"gemm bf16/fp32": 0.5, "nccl (communication)": 0.3,
                                               "attention forward": 0.2, "memcpy / memset": 0.1}
    assert summary["kernels_per_step"]["gemm bf16/fp32"] == 2
    table = format_table({"run": summary})
    assert "| gpu span | 1.2 |" in table
    assert "| attention forward | 0.2 |" in table


def test_trace_without_kernels_is_an_error(tmp_path):
    trace = tmp_path / "cpu_trace.json"
    trace.write_text(json.dumps({"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0,
                                                  "dur": 5}]}))
    with pytest.raises(ValueError, match="no GPU kernel events"):
        summarize(trace)
