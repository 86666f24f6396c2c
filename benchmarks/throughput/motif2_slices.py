"""Motif-2 flavors that exist for benchmarks only, registered as the TrainSpec "motif2_slices" (motif2's own spec
with these flavors added). Loaded by the throughput benchmark through ``--experimental.custom_import motif2_slices``
(this folder on PYTHONPATH); motif2's own flavors dict is left as it is.

``12.7B_8layers``: 8 of Motif-2-12.7B's transformer blocks, unchanged (dim 4096, GDA 40 q / 16 kv heads,
FFN 16384), with a 44,032-token vocabulary (2.54B parameters). One H100 trains it, and it shows FP8 on the 12.7B's
own linear shapes. The smaller vocabulary keeps the output head's share of the matmul weights what it is in the
40-layer model (7.6% in both), where the full 219,520-token head on 8 blocks would be 29%.

``1B_polynorm_torch``: motif2's "1B" with the PolyNorm activation in PyTorch ops (``polynorm_backend = "torch"``:
torch.compile's fusion instead of the Triton kernel), the benchmark's "fused kernels off".
"""

import dataclasses

from torchtitan.protocols.train_spec import register_train_spec

from motif_titan.train_spec import get_train_spec
from motif_titan.model import motif2_args

SLICES = {
    "12.7B_8layers": dataclasses.replace(motif2_args["12.7B"], n_layers=8, vocab_size=44032),
    "1B_polynorm_torch": dataclasses.replace(motif2_args["1B"], polynorm_backend="torch"),
}

register_train_spec("motif2_slices", dataclasses.replace(get_train_spec(), model_args={**motif2_args, **SLICES}))
