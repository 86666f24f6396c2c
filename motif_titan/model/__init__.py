"""The Motif-2 model: flavors (name -> Motif2ModelArgs), the model classes and the HF state-dict adapter."""

from .args import Motif2ModelArgs
from .hf_config import checkpoint_model_args, model_args_record
from .model import GroupedDiffAttention, Motif2Model, PolyNorm, PolyNormFeedForward, lambda_init_for_layer
from .state_dict_adapter import Motif2StateDictAdapter

__all__ = [
    "Motif2ModelArgs",
    "Motif2Model",
    "GroupedDiffAttention",
    "PolyNorm",
    "PolyNormFeedForward",
    "Motif2StateDictAdapter",
    "lambda_init_for_layer",
    "motif2_args",
    "Motif2Flavors",
    "FROM_CHECKPOINT",
    "CheckpointShapedArgs",
    "initial_load_folder",
    "first_load_folder",
    "checkpoint_shapes",
]

FROM_CHECKPOINT = "from_checkpoint"


def initial_load_folder(job_config) -> tuple[str | None, str | None]:
    """The folder a job's first load reads weights from, and the TOML field that names it: TorchTitan's
    ``checkpoint.initial_load_path``, else (``checkpoint.initial_load_in_hf``) ``model.hf_assets_path``; (None,
    None) when the job loads no initial weights."""
    return first_load_folder(job_config.checkpoint, job_config.model.hf_assets_path, "model.hf_assets_path")


def first_load_folder(checkpoint, hf_assets_path: str | None, hf_field: str) -> tuple[str | None, str | None]:
    """``initial_load_folder`` from a checkpoint section and the HF assets path (``hf_field`` names it: its place
    differs between TorchTitan versions)."""
    if checkpoint.initial_load_path:
        return checkpoint.initial_load_path, "checkpoint.initial_load_path"
    if checkpoint.initial_load_in_hf and hf_assets_path not in (None, "", "embedded"):
        return hf_assets_path, hf_field
    return None, None


def checkpoint_shapes(folder: str | None, field: str | None) -> Motif2ModelArgs:
    """The model args of ``flavor = "from_checkpoint"``: those described by ``folder`` (``first_load_folder``)."""
    if folder is None:
        raise ValueError(f"model.flavor = {FROM_CHECKPOINT!r} takes its shapes from the checkpoint the job "
                         "loads first: set checkpoint.initial_load_path (a step folder or an HF folder), or "
                         "checkpoint.initial_load_in_hf = true with model.hf_assets_path")
    shapes = checkpoint_model_args(folder)
    if shapes is None:
        raise ValueError(f"model.flavor = {FROM_CHECKPOINT!r}: {field} = {folder!r} has neither "
                         "model_args.json nor config.json to read the model's shapes from")
    return shapes


class CheckpointShapedArgs(Motif2ModelArgs):
    """The args of ``model.flavor = "from_checkpoint"``: the shapes, eps and RoPE settings of the checkpoint the
    job first loads (its ``model_args.json`` or ``config.json``), read when the args take the job
    (``update_from_config``), so a checkpoint of any Motif-2 shape (an upscaled one, a Hub model) trains without a
    flavor written in code. Until then they hold the debug shapes."""

    def update_from_config(self, job_config, **kwargs) -> None:
        shapes = checkpoint_shapes(*initial_load_folder(job_config))
        for name, value in model_args_record(shapes).items():
            setattr(self, name, value)
        self.__post_init__()
        super().update_from_config(job_config, **kwargs)


class Motif2Flavors(dict):
    """name -> Motif2ModelArgs; an unknown name is an error that names ``model.flavor`` and the choices."""

    def __missing__(self, flavor: str):
        if flavor == FROM_CHECKPOINT:
            return CheckpointShapedArgs(**_DEBUG_SHAPES)
        raise ValueError(f"model.flavor = {flavor!r} is not a motif2 flavor; allowed: {sorted(self)}, or "
                         f"{FROM_CHECKPOINT!r} (the shapes of the checkpoint the job loads first)")


_DEBUG_SHAPES = dict(
    dim=256,
    n_layers=4,
    n_heads=10,  # 2 groups of 4 signal heads + 1 noise head: GDA ratio 4
    n_kv_heads=4,
    n_noise_heads=2,
    head_dim=32,
    ffn_hidden_dim=1024,
    vocab_size=2048,
    rope_theta=500_000.0,
    max_seq_len=2048,
)

_MOTIF2_1B_SHAPES = dict(
    dim=2048,
    n_layers=16,
    n_heads=20,
    n_kv_heads=8,
    n_noise_heads=4,
    head_dim=128,
    ffn_hidden_dim=8192,
    vocab_size=32768,
    rope_theta=500_000.0,
    max_seq_len=8192,
)

_MOTIF2_12_7B_SHAPES = dict(
    dim=4096,
    n_layers=40,
    n_heads=40,
    n_kv_heads=16,
    n_noise_heads=8,
    head_dim=128,
    ffn_hidden_dim=16384,
    vocab_size=219520,
    rope_theta=1_000_000.0,
    max_seq_len=32768,
    enable_weight_tying=False,
)

motif2_args = Motif2Flavors({
    "debugmodel": Motif2ModelArgs(**_DEBUG_SHAPES),
    "debugmodel_flex_attn": Motif2ModelArgs(**_DEBUG_SHAPES, attn_type="flex", attn_mask_type="block_causal"),
    # A tiny Motif-2.6B look-alike: plain Differential Attention (ratio 1) and tied embeddings.
    "debugmodel_diffattn": Motif2ModelArgs(
        **{**_DEBUG_SHAPES, "n_heads": 8, "n_kv_heads": 8, "n_noise_heads": 4}, enable_weight_tying=True
    ),
    # A one-GPU Motif-2 (about 1.2B parameters) for throughput work: the 12.7B's head layout (GDA 4:1, head_dim 128)
    # at half the width and 16 layers, with a 32K vocabulary.
    "1B": Motif2ModelArgs(**_MOTIF2_1B_SHAPES),
    # Motif-2.6B: plain Differential Attention (GDA ratio 1), tied embeddings, long-context RoPE.
    "2.6B": Motif2ModelArgs(
        dim=2048,
        n_layers=32,
        n_heads=16,
        n_kv_heads=16,
        n_noise_heads=8,
        head_dim=128,
        ffn_hidden_dim=8192,
        vocab_size=219520,
        rope_theta=500_000.0,
        max_seq_len=4096,
        enable_weight_tying=True,
    ),
    # Motif-2-12.7B (report Table 1): GDA 4:1, 40 q heads (32 signal + 8 noise), 16 kv heads.
    "12.7B": Motif2ModelArgs(**_MOTIF2_12_7B_SHAPES),
    # The same with flex attention and document (block_causal) masks: SFT on packed rows.
    "12.7B_flex_attn": Motif2ModelArgs(**_MOTIF2_12_7B_SHAPES, attn_type="flex", attn_mask_type="block_causal"),
})
