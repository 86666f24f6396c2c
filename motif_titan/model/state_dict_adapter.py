"""Conversion between motif_titan's state dict and the HF Motif-2 checkpoint names.

The model uses the HF rotate-half RoPE layout, so wq/wk rows are copied as they are (no permutation), and the
conversion is a pure renaming. ``lambda_init`` is recomputed from the layer index and never stored.
With tied embeddings HF stores only ``model.embed_tokens.weight``; ``output.weight`` is dropped on export and
restored from the embedding on import.
"""

import re
from typing import Any

from torchtitan.protocols.state_dict_adapter import StateDictAdapter

from .args import Motif2ModelArgs

_LAYER_KEY = re.compile(r"\.(\d+)\.")

# HF name -> motif_titan name; "{}" is the layer index.
FROM_HF = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.layers.{}.self_attn.q_proj.weight": "layers.{}.attention.wq.weight",
    "model.layers.{}.self_attn.k_proj.weight": "layers.{}.attention.wk.weight",
    "model.layers.{}.self_attn.v_proj.weight": "layers.{}.attention.wv.weight",
    "model.layers.{}.self_attn.o_proj.weight": "layers.{}.attention.wo.weight",
    "model.layers.{}.self_attn.lambda_q1": "layers.{}.attention.lambda_q1",
    "model.layers.{}.self_attn.lambda_k1": "layers.{}.attention.lambda_k1",
    "model.layers.{}.self_attn.lambda_q2": "layers.{}.attention.lambda_q2",
    "model.layers.{}.self_attn.lambda_k2": "layers.{}.attention.lambda_k2",
    "model.layers.{}.self_attn.subln.weight": "layers.{}.attention.subln.weight",
    "model.layers.{}.mlp.gate_proj.weight": "layers.{}.feed_forward.w1.weight",
    "model.layers.{}.mlp.up_proj.weight": "layers.{}.feed_forward.w3.weight",
    "model.layers.{}.mlp.down_proj.weight": "layers.{}.feed_forward.w2.weight",
    "model.layers.{}.mlp.act_fn.weight": "layers.{}.feed_forward.poly_norm.weight",
    "model.layers.{}.mlp.act_fn.bias": "layers.{}.feed_forward.poly_norm.bias",
    "model.layers.{}.input_layernorm.weight": "layers.{}.attention_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.ffn_norm.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
TO_HF = {native: hf for hf, native in FROM_HF.items()}
# Keys some HF exports carry that hold no learned state here.
_HF_KEYS_WITHOUT_STATE = ("rotary_emb.inv_freq",)


def _rename(key: str, table: dict[str, str], direction: str) -> str:
    match = _LAYER_KEY.search(key)
    abstract = key if match is None else key[: match.start()] + ".{}." + key[match.end():]
    if abstract not in table:
        raise KeyError(f"{direction}: no Motif-2 mapping for state-dict key {key!r}")
    return table[abstract] if match is None else table[abstract].format(match.group(1))


class Motif2StateDictAdapter(StateDictAdapter):
    """``to_hf`` / ``from_hf`` for TorchTitan's checkpointer (HF safetensors import and export)."""

    def __init__(self, model_args: Motif2ModelArgs, hf_assets_path: str | None):
        super().__init__(model_args, hf_assets_path)
        self.model_args = model_args

    def to_hf(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        tied = self.model_args.enable_weight_tying
        return {
            _rename(key, TO_HF, "to_hf"): value
            for key, value in state_dict.items()
            if not (tied and key == "output.weight")
        }

    def from_hf(self, hf_state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict = {
            _rename(key, FROM_HF, "from_hf"): value
            for key, value in hf_state_dict.items()
            if not key.endswith(_HF_KEYS_WITHOUT_STATE)
        }
        if self.model_args.enable_weight_tying and "tok_embeddings.weight" in state_dict:
            state_dict.setdefault("output.weight", state_dict["tok_embeddings.weight"])
        return state_dict
