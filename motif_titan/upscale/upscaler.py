"""The three steps composed tensor by tensor: every target tensor is made from the one source tensor it comes from
(width, then heads, then depth), so a checkpoint of any size streams through with one tensor in memory at a time.
"""

import functools

import torch

from .checkpoint_io import CheckpointReader, expected_shapes
from .depth_expansion import LAMBDA_KINDS, depth_adjust_tensor, shift_lambda_vectors
from .head_growth import grow_heads_tensor
from .hypercloning import hyperclone_tensor, noise_generator
from .plan import UpscalePlan

# Parameters the model keeps in fp32 whatever its dtype (GDA's lambda vectors, PolyNorm's weights): written in
# at least fp32, so a bf16 output does not round them.
_KEPT_IN_FP32 = (*LAMBDA_KINDS, "feed_forward.poly_norm.weight", "feed_forward.poly_norm.bias")


def _kind(key: str) -> tuple[int | None, str]:
    if key.startswith("layers."):
        _, index, kind = key.split(".", 2)
        return int(index), kind
    return None, key


class Upscaler:
    """Target parameter name -> upscaled tensor. Cloning runs in float64 for a float64 output, float32 otherwise,
    and each tensor is cast to the output dtype at the end."""

    def __init__(self, plan: UpscalePlan, reader: CheckpointReader, dtype: torch.dtype):
        self.plan, self.reader, self.dtype = plan, reader, dtype
        self.compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.shapes = expected_shapes(plan.target)

    def dtype_of(self, key: str) -> torch.dtype:
        return torch.promote_types(self.dtype, torch.float32) if _kind(key)[1] in _KEPT_IN_FP32 else self.dtype

    def dtypes(self) -> dict[str, torch.dtype]:
        return {key: self.dtype_of(key) for key in self.shapes}

    def _read(self, key: str) -> torch.Tensor:
        if key == "output.weight" and self.plan.source.enable_weight_tying:
            key = "tok_embeddings.weight"
        return self.reader.get(key).to(self.compute_dtype)

    @functools.lru_cache(maxsize=2)
    def _lambda_vectors(self, index: int) -> dict[str, torch.Tensor]:
        layer = self.plan.layers[index]
        vectors = [self._read(f"layers.{layer.source}.{kind}") for kind in LAMBDA_KINDS]
        return dict(zip(LAMBDA_KINDS, shift_lambda_vectors(*vectors, *layer.lambda_init_shift)))

    def tensor(self, key: str) -> torch.Tensor:
        index, kind = _kind(key)
        out_dtype = self.dtype_of(key)
        if index is None:
            source_key = "tok_embeddings.weight" if key == "output.weight" and self.plan.target.enable_weight_tying \
                else key
            tensor = hyperclone_tensor(source_key, self._read(source_key), self.plan.width_factor,
                                       self.plan.spec.noise_snr_db, noise_generator(self.plan.spec.seed, key))
            return tensor.to(out_dtype)
        if kind in LAMBDA_KINDS:
            return self._lambda_vectors(index)[kind].to(out_dtype)
        layer = self.plan.layers[index]
        src, spec = self.plan.source, self.plan.spec
        tensor = self._read(f"layers.{layer.source}.{kind}")
        tensor = hyperclone_tensor(kind, tensor, self.plan.width_factor, spec.noise_snr_db,
                                   noise_generator(spec.seed, key))
        tensor = grow_heads_tensor(kind, tensor, src.n_noise_heads, src.gda_ratio, src.head_dim,
                                   self.plan.head_copies, spec.noise_snr_db, noise_generator(spec.seed + 1, key))
        tensor = depth_adjust_tensor(kind, tensor, layer)
        assert tuple(tensor.shape) == self.shapes[key], (key, tensor.shape, self.shapes[key])
        return tensor.to(out_dtype).contiguous()
