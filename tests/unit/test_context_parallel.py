"""Context parallelism's layout rules for Motif-2, without launching anything: sequences that do not split over
the cp ranks (and the tp ranks within them) are refused naming the field, those that do are accepted, and the
repeated kv heads the CP plan's attention sees equal GQA's. The CP forwards on gloo ranks and the GPU training runs
are in tests/integration/test_context_parallel_runs.py."""

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from motif_titan.infra.job_rules import check_context_parallel
from motif_titan.model import motif2_args
from motif_titan.model.attention import repeat_heads as _repeat_heads

from helpers.jobs import parse_debug_job as _job







def test_repeated_kv_heads_equal_gqa():
    """The fp32 CUDA path repeats kv heads instead of asking SDPA for GQA: same pairing of q and kv heads."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 16, 4), torch.randn(2, 2, 16, 4), torch.randn(2, 2, 16, 4)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    repeated = F.scaled_dot_product_attention(q, _repeat_heads(k, 4), _repeat_heads(v, 4), is_causal=True)
    torch.testing.assert_close(repeated, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(_repeat_heads(k, 4)[:, 5], k[:, 1])


@pytest.mark.parametrize("flavor,cli,message", [
    ("debugmodel", ["--training.seq_len", "250"],
     "training.seq_len = 250 must be a multiple of 4 (parallelism.context_parallel_degree = 2, load balancer "
     "'headtail', attn_type 'sdpa') with seq_len / 2 a multiple of parallelism.tensor_parallel_degree = 1"),
    ("debugmodel", ["--training.seq_len", "258", "--parallelism.tensor_parallel_degree", "2",
                    "--parallelism.context_parallel_load_balancer", "None"],
     "training.seq_len = 258 must be a multiple of 2 (parallelism.context_parallel_degree = 2, load balancer None, "
     "attn_type 'sdpa') with seq_len / 2 a multiple of parallelism.tensor_parallel_degree = 2"),
    ("debugmodel_flex_attn", ["--training.seq_len", "256"],
     "training.seq_len = 256 must be a multiple of 512 (parallelism.context_parallel_degree = 2, load balancer "
     "'headtail', attn_type 'flex')"),
])
def test_cp_refuses_sequences_that_do_not_split(flavor, cli, message):
    args = dataclasses.replace(motif2_args[flavor])
    with pytest.raises(ValueError, match=re.escape(message)):
        check_context_parallel(args, _job("--parallelism.context_parallel_degree", "2", *cli))


def test_cp_accepts_sequences_that_split():
    check_context_parallel(motif2_args["debugmodel"],
                           _job("--parallelism.context_parallel_degree", "2", "--training.seq_len", "264",
                                "--parallelism.tensor_parallel_degree", "2"))
    check_context_parallel(motif2_args["debugmodel_flex_attn"],
                           _job("--parallelism.context_parallel_degree", "2", "--training.seq_len", "256",
                                "--parallelism.context_parallel_load_balancer", "None"))




# --- GPUs ------------------------------------------------------------------------------------------------------





