"""One launch of each PolyNorm kernel at 8192 x 16384 bf16, for a profiler (run_kernels_h200.sh's ncu step):
PolyNorm fwd, PolyNorm bwd, PolyNorm x mul fwd, PolyNorm x mul bwd, in that order."""

import torch

from motif_titan.kernels.polynorm import poly_norm_bwd, poly_norm_fwd, poly_norm_mul_bwd, poly_norm_mul_fwd

x, m, gy = (torch.randn(8192, 16384, device="cuda", dtype=torch.bfloat16) for _ in range(3))
w = torch.tensor([0.6, 0.3, 0.9], device="cuda")
b = torch.tensor([0.1], device="cuda")
_, rstd = poly_norm_fwd(x, w, b, 1e-6)
poly_norm_bwd(gy, x, w, b, rstd)
poly_norm_mul_fwd(x, m, w, b, 1e-6)
poly_norm_mul_bwd(gy, x, m, w, b, rstd)
torch.cuda.synchronize()
