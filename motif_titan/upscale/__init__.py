"""Upscaling Motif-2 checkpoints, function-preserving: hypercloning (width), GDA head growth, LLaMA-Pro depth
expansion, streamed tensor by tensor between HF safetensors and TorchTitan DCP. CLI: ``python -m motif_titan.upscale``."""

from .depth_expansion import shift_lambda_vectors
from .plan import UpscalePlan, UpscaleSpec, depth_layer_map, plan_upscale
from .upscaler import UPSCALE_RULES, Upscaler, UpscaleRule

__all__ = [
    "UpscaleSpec",
    "UpscalePlan",
    "Upscaler",
    "UpscaleRule",
    "UPSCALE_RULES",
    "plan_upscale",
    "depth_layer_map",
    "shift_lambda_vectors",
]
