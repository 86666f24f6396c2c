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

# Written in at least fp32 whatever --dtype says: GDA's lambda vectors and PolyNorm's weights (the model creates
# them in fp32) and subln's weight (used in fp32; depth expansion rescales it, which bf16 would round). All are
# vectors of at most 2 * head_dim entries.
_KEPT_IN_FP32 = (*LAMBDA_KINDS, "attention.subln.weight", "feed_forward.poly_norm.weight",
                 "feed_forward.poly_norm.bias")


ROW_CHUNK = 8192


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

    def _top_level_tensor(self, key: str, out_dtype: torch.dtype) -> torch.Tensor:
        """Embedding, final norm, head. The vocab-sized ones go in row chunks (each row is cloned on its own), so
        the 12.7B head (219,520 x 4,096) never exists in fp32 whole: peak is the source rows plus the output."""
        kind = "tok_embeddings.weight" if key == "output.weight" and self.plan.target.enable_weight_tying else key
        source_key = "tok_embeddings.weight" if key == "output.weight" and self.plan.source.enable_weight_tying \
            else kind
        source = self.reader.get(source_key)
        generator = noise_generator(self.plan.spec.seed, key)
        if source.dim() == 1:
            return hyperclone_tensor(kind, source.to(self.compute_dtype), self.plan.width_factor,
                                     self.plan.spec.noise_snr_db, generator).to(out_dtype)
        out = torch.empty(self.shapes[key], dtype=out_dtype)
        for start in range(0, source.shape[0], ROW_CHUNK):
            rows = source[start:start + ROW_CHUNK].to(self.compute_dtype)
            out[start:start + ROW_CHUNK] = hyperclone_tensor(kind, rows, self.plan.width_factor,
                                                             self.plan.spec.noise_snr_db, generator)
        return out

    def tensor(self, key: str) -> torch.Tensor:
        index, kind = _kind(key)
        out_dtype = self.dtype_of(key)
        if index is None:
            return self._top_level_tensor(key, out_dtype)
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
