"""Conversion between motif_titan's state dict and the HF Motif-2 checkpoint names.

The model uses the HF rotate-half RoPE layout, so wq/wk rows are copied as they are (no permutation), and the
conversion is a pure renaming. ``lambda_init`` is recomputed from the layer index and never stored.
With tied embeddings HF stores only ``model.embed_tokens.weight``; ``output.weight`` is dropped on export and
restored from the embedding on import.

``TO_HF`` is the one table of Motif-2 tensor names outside the model itself (the model, built on the meta device,
gives the names and shapes of a given size); ``split_layer_index`` is the one parser of ``layers.{i}.`` names.
"""

import re
from typing import Any

from torchtitan.protocols.state_dict_adapter import StateDictAdapter

from .args import Motif2ModelArgs

# motif_titan name -> HF name, in model order; "{}" is the layer index.
TO_HF = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "layers.{}.attention.lambda_q1": "model.layers.{}.self_attn.lambda_q1",
    "layers.{}.attention.lambda_k1": "model.layers.{}.self_attn.lambda_k1",
    "layers.{}.attention.lambda_q2": "model.layers.{}.self_attn.lambda_q2",
    "layers.{}.attention.lambda_k2": "model.layers.{}.self_attn.lambda_k2",
    "layers.{}.attention.wq.weight": "model.layers.{}.self_attn.q_proj.weight",
    "layers.{}.attention.wk.weight": "model.layers.{}.self_attn.k_proj.weight",
    "layers.{}.attention.wv.weight": "model.layers.{}.self_attn.v_proj.weight",
    "layers.{}.attention.wo.weight": "model.layers.{}.self_attn.o_proj.weight",
    "layers.{}.attention.subln.weight": "model.layers.{}.self_attn.subln.weight",
    "layers.{}.feed_forward.w1.weight": "model.layers.{}.mlp.gate_proj.weight",
    "layers.{}.feed_forward.w2.weight": "model.layers.{}.mlp.down_proj.weight",
    "layers.{}.feed_forward.w3.weight": "model.layers.{}.mlp.up_proj.weight",
    "layers.{}.feed_forward.poly_norm.weight": "model.layers.{}.mlp.act_fn.weight",
    "layers.{}.feed_forward.poly_norm.bias": "model.layers.{}.mlp.act_fn.bias",
    "layers.{}.attention_norm.weight": "model.layers.{}.input_layernorm.weight",
    "layers.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
FROM_HF = {hf: native for native, hf in TO_HF.items()}
# Tensors some HF exports carry that hold no learned state here.
_HF_WITHOUT_STATE = ("rotary_emb.inv_freq",)
_LAYER_INDEX = re.compile(r"^((?:model\.)?layers)\.(\d+)\.")


def split_layer_index(name: str) -> tuple[int | None, str]:
    """``layers.3.attention.wq.weight`` -> ``(3, "layers.{}.attention.wq.weight")``, HF's ``model.layers.3.``
    alike; a name outside the layers -> ``(None, name)``."""
    match = _LAYER_INDEX.match(name)
    if match is None:
        return None, name
    return int(match.group(2)), f"{match.group(1)}.{{}}.{name[match.end():]}"


def _rename(name: str, table: dict[str, str], direction: str) -> str:
    index, template = split_layer_index(name)
    if template not in table:
        raise KeyError(f"{direction}: no Motif-2 mapping for state-dict key {name!r}")
    return table[template].format(index)


def to_hf_name(name: str) -> str:
    """The HF name of a motif_titan parameter; KeyError for a name that is not a Motif-2 parameter."""
    return _rename(name, TO_HF, "to_hf")


def from_hf_name(hf_name: str) -> str | None:
    """The motif_titan name of an HF tensor, None for one that holds no learned state here; KeyError for a name
    that is not Motif-2's."""
    return None if hf_name.endswith(_HF_WITHOUT_STATE) else _rename(hf_name, FROM_HF, "from_hf")


class Motif2StateDictAdapter(StateDictAdapter):
    """``to_hf`` / ``from_hf`` for TorchTitan's checkpointer (HF safetensors import and export)."""

    def __init__(self, model_args: Motif2ModelArgs, hf_assets_path: str | None):
        super().__init__(model_args, hf_assets_path)
        self.model_args = model_args

    def to_hf(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        tied = self.model_args.enable_weight_tying
        return {to_hf_name(key): value for key, value in state_dict.items() if not (tied and key == "output.weight")}

    def from_hf(self, hf_state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict = {}
        for hf_key, value in hf_state_dict.items():
            if (key := from_hf_name(hf_key)) is not None:
                state_dict[key] = value
        if self.model_args.enable_weight_tying and "tok_embeddings.weight" in state_dict:
            state_dict.setdefault("output.weight", state_dict["tok_embeddings.weight"])
        return state_dict
