"""Upscaling Motif-2 checkpoints, function-preserving: hypercloning (width), GDA head growth, LLaMA-Pro depth
expansion, streamed tensor by tensor between HF safetensors and TorchTitan DCP. CLI: ``python -m motif_titan.upscale``."""

from .depth_expansion import expand_depth, shift_lambda_vectors
from .head_growth import grow_gda_heads
from .hypercloning import hyperclone_width
from .plan import UpscalePlan, UpscaleSpec, depth_layer_map, plan_upscale
from .upscaler import Upscaler

__all__ = [
    "UpscaleSpec",
    "UpscalePlan",
    "Upscaler",
    "plan_upscale",
    "depth_layer_map",
    "hyperclone_width",
    "grow_gda_heads",
    "expand_depth",
    "shift_lambda_vectors",
]
