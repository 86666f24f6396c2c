"""The three steps composed tensor by tensor: every target tensor is made from the one source tensor it comes from
(width, then heads, then depth), so a checkpoint of any size streams through with one tensor in memory at a time.

``UPSCALE_RULES`` says, for every Motif-2 parameter (named as in the state-dict adapter, ``{}`` for the layer
index), what each step does to it; the rule names are those of ``hyperclone_tensor``, ``grow_heads_tensor`` and
``depth_adjust_tensor``. A parameter of the model without a row is refused before anything is read.
"""

import functools
from dataclasses import dataclass

import torch

from motif_titan.checkpoint_io import CheckpointReader, expected_shapes
from motif_titan.model.state_dict_adapter import split_layer_index

from .depth_expansion import LAMBDA_VECTORS, depth_adjust_tensor, shift_lambda_vectors
from .head_growth import grow_heads_tensor
from .hypercloning import hyperclone_tensor, noise_generator
from .plan import UpscalePlan


@dataclass(frozen=True)
class UpscaleRule:
    """What width hypercloning, GDA head growth and depth expansion do to one parameter. ``at_least_fp32``: written
    in at least fp32 whatever --dtype says (the model creates GDA's lambda vectors and PolyNorm's weights in fp32;
    subln's weight is used in fp32 and depth expansion rescales it, which bf16 would round)."""

    width: str = "keep"
    heads: str = "keep"
    depth: str = "keep"
    at_least_fp32: bool = False


_FP32 = UpscaleRule(at_least_fp32=True)
_LAMBDA = UpscaleRule(depth="shift_lambda", at_least_fp32=True)
UPSCALE_RULES = {
    "tok_embeddings.weight": UpscaleRule(width="tile_columns"),
    "layers.{}.attention.lambda_q1": _LAMBDA,
    "layers.{}.attention.lambda_k1": _LAMBDA,
    "layers.{}.attention.lambda_q2": _LAMBDA,
    "layers.{}.attention.lambda_k2": _LAMBDA,
    "layers.{}.attention.wq.weight": UpscaleRule(width="divide_columns", heads="copy_signal_heads"),
    "layers.{}.attention.wk.weight": UpscaleRule(width="divide_columns"),
    "layers.{}.attention.wv.weight": UpscaleRule(width="divide_columns"),
    "layers.{}.attention.wo.weight": UpscaleRule(width="tile_rows", heads="share_signal_heads",
                                                 depth="zero_in_identity"),
    "layers.{}.attention.subln.weight": UpscaleRule(depth="rescale_subln", at_least_fp32=True),
    "layers.{}.feed_forward.w1.weight": UpscaleRule(width="divide_columns_tile_rows"),
    "layers.{}.feed_forward.w2.weight": UpscaleRule(width="divide_columns_tile_rows", depth="zero_in_identity"),
    "layers.{}.feed_forward.w3.weight": UpscaleRule(width="divide_columns_tile_rows"),
    "layers.{}.feed_forward.poly_norm.weight": _FP32,
    "layers.{}.feed_forward.poly_norm.bias": _FP32,
    "layers.{}.attention_norm.weight": UpscaleRule(width="tile"),
    "layers.{}.ffn_norm.weight": UpscaleRule(width="tile"),
    "norm.weight": UpscaleRule(width="tile"),
    "output.weight": UpscaleRule(width="divide_columns"),
}

ROW_CHUNK = 8192


class Upscaler:
    """Target parameter name -> upscaled tensor. Cloning runs in float64 for a float64 output, float32 otherwise,
    and each tensor is cast to the output dtype at the end."""

    def __init__(self, plan: UpscalePlan, reader: CheckpointReader, dtype: torch.dtype):
        self.plan, self.reader, self.dtype = plan, reader, dtype
        self.compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.shapes = expected_shapes(plan.target)
        self.rules = {}
        for key in self.shapes:
            name = split_layer_index(key)[1]
            if name not in UPSCALE_RULES:
                raise ValueError(f"no upscale rule for the Motif-2 parameter {name!r}: add its row to UPSCALE_RULES "
                                 "in motif_titan/upscale/upscaler.py")
            self.rules[key] = UPSCALE_RULES[name]

    def dtype_of(self, key: str) -> torch.dtype:
        return torch.promote_types(self.dtype, torch.float32) if self.rules[key].at_least_fp32 else self.dtype

    def dtypes(self) -> dict[str, torch.dtype]:
        return {key: self.dtype_of(key) for key in self.shapes}

    def _read(self, key: str) -> torch.Tensor:
        return self.reader.get(key).to(self.compute_dtype)

    @functools.lru_cache(maxsize=2)
    def _lambda_vectors(self, index: int, module: str) -> dict[str, torch.Tensor]:
        """The four lambda vectors of target layer ``index`` (``module``: their prefix, ``{}`` for the index)."""
        layer = self.plan.layers[index]
        vectors = [self._read(f"{module}.{name}".format(layer.source)) for name in LAMBDA_VECTORS]
        return dict(zip(LAMBDA_VECTORS, shift_lambda_vectors(*vectors, *layer.lambda_init_shift)))

    def _top_level_tensor(self, key: str, rule: UpscaleRule, out_dtype: torch.dtype) -> torch.Tensor:
        """Embedding, final norm, head. The vocab-sized ones go in row chunks (each row is cloned on its own), so
        the 12.7B head (219,520 x 4,096) never exists in fp32 whole: peak is the source rows plus the output. A
        tied source's head is its embedding."""
        tied_head = key == "output.weight" and self.plan.source.enable_weight_tying
        source = self.reader.get("tok_embeddings.weight" if tied_head else key)
        clone = functools.partial(hyperclone_tensor, rule.width, width_factor=self.plan.width_factor,
                                  noise_snr_db=self.plan.spec.noise_snr_db,
                                  generator=noise_generator(self.plan.spec.seed, key))
        if source.dim() == 1:
            return clone(source.to(self.compute_dtype)).to(out_dtype)
        out = torch.empty(self.shapes[key], dtype=out_dtype)
        for start in range(0, source.shape[0], ROW_CHUNK):
            out[start:start + ROW_CHUNK] = clone(source[start:start + ROW_CHUNK].to(self.compute_dtype))
        return out

    def tensor(self, key: str) -> torch.Tensor:
        index, name = split_layer_index(key)
        rule, out_dtype = self.rules[key], self.dtype_of(key)
        if index is None:
            return self._top_level_tensor(key, rule, out_dtype)
        if rule.depth == "shift_lambda":
            module, vector = name.rsplit(".", 1)
            return self._lambda_vectors(index, module)[vector].to(out_dtype)
        layer = self.plan.layers[index]
        src, spec = self.plan.source, self.plan.spec
        tensor = self._read(name.format(layer.source))
        tensor = hyperclone_tensor(rule.width, tensor, self.plan.width_factor, spec.noise_snr_db,
                                   noise_generator(spec.seed, key))
        tensor = grow_heads_tensor(rule.heads, tensor, src.n_noise_heads, src.gda_ratio, src.head_dim,
                                   self.plan.head_copies, spec.noise_snr_db, noise_generator(spec.seed + 1, key))
        tensor = depth_adjust_tensor(rule.depth, tensor, layer)
        assert tuple(tensor.shape) == self.shapes[key], (key, tensor.shape, self.shapes[key])
        return tensor.to(out_dtype).contiguous()
