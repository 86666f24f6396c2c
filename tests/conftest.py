"""Without a GPU, run Triton kernels through the interpreter (decided when a kernel is decorated, so this must
happen before motif_titan is imported)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
