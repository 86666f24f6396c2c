"""A ``Motif2Model`` with a checkpoint's weights, for evaluation: from a TorchTitan DCP step folder (model-only or a
full training checkpoint, whose optimizer / scheduler / dataloader entries are skipped) or an HF safetensors
folder, read through ``motif_titan.checkpoint_io`` one layer at a time.

The model's shapes come from the checkpoint's tensors (``infer_model_args``) or from a named flavor, which must
then have exactly the checkpoint's shapes. RoPE theta, the context length and the eps values are not in a
checkpoint's tensors: they come from the folder's description (``model_args.json`` or ``config.json``) when it
has one, else from the registered flavor with the checkpoint's shapes, if any (a warning says when neither tells).
Evaluation always runs SDPA with a causal mask (each request is one document).
"""

import dataclasses
import logging

import torch

from motif_titan.model import Motif2Model, Motif2ModelArgs, motif2_args
from motif_titan.model.model import precompute_rope_cache
from motif_titan.checkpoint_io import SETTINGS_NOT_IN_TENSORS, CheckpointReader, expected_shapes, infer_model_args
from motif_titan.upscale.plan import matching_flavor

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def parse_dtype(name: str, label: str = "dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{label} = {name!r}; allowed: {sorted(DTYPES)}")
    return DTYPES[name]


def parse_device(name: str | None, label: str = "device") -> torch.device:
    """``name`` as a torch device (None: cuda when available, else cpu); an accelerator that is not there is
    refused here, before any weight is read."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{label} = {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{label} = {name!r}, but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{label} = {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"{label} = {name!r}: not a device this model runs on")
    return device


def flavor_shape_mismatch(reader: CheckpointReader, checkpoint_args: Motif2ModelArgs, args: Motif2ModelArgs,
                          flavor: str) -> str | None:
    """Why ``reader``'s tensors (of a model with ``checkpoint_args``) cannot load into flavor ``flavor`` with
    ``args``, naming the first parameter that differs; None when every parameter has the flavor's shape."""
    stored = reader.shapes()
    expected = expected_shapes(args, include_tied_output=False)
    for key, shape in expected.items():
        if key not in stored:
            return f"parameter {key!r} (shape {list(shape)} in flavor {flavor!r}) is not in the checkpoint"
        if tuple(stored[key]) != tuple(shape):
            return (f"parameter {key!r} has shape {list(stored[key])} in the checkpoint, {list(shape)} in flavor "
                    f"{flavor!r}")
    extra = sorted(set(stored) - set(expected) - {"output.weight"})
    if extra:
        return f"the checkpoint has {extra[0]!r}, which flavor {flavor!r} has not"
    if checkpoint_args.enable_weight_tying != args.enable_weight_tying:
        tied = {True: "tied to 'tok_embeddings.weight'", False: "its own matrix"}
        return (f"parameter 'output.weight' is {tied[checkpoint_args.enable_weight_tying]} in the checkpoint, "
                f"{tied[args.enable_weight_tying]} in flavor {flavor!r}")
    return None


def resolve_model_args(reader: CheckpointReader, flavor: str | None = None) -> Motif2ModelArgs:
    """The args to evaluate ``reader``'s checkpoint with: ``flavor``'s (refused, naming the parameter, unless the
    checkpoint has exactly its shapes) or the checkpoint's own (``infer_model_args``), run with SDPA."""
    checkpoint_args = infer_model_args(reader)
    if flavor is not None:
        args = motif2_args[flavor]
        mismatch = flavor_shape_mismatch(reader, checkpoint_args, args, flavor)
        if mismatch is not None:
            raise ValueError(f"flavor = {flavor!r} does not fit checkpoint {reader.path}: {mismatch}")
    elif reader.description is None and (name := matching_flavor(checkpoint_args, motif2_args)) is not None:
        args = dataclasses.replace(checkpoint_args,
                                   **{f: getattr(motif2_args[name], f) for f in SETTINGS_NOT_IN_TENSORS})
        logger.info("checkpoint %s has the shapes of flavor %r: using its RoPE theta, max_seq_len and eps",
                    reader.path, name)
    else:
        args = checkpoint_args
        if reader.description is None:
            logger.warning("checkpoint %s has no model_args.json / config.json and matches no flavor: RoPE theta "
                           "%s, max_seq_len %s and eps are Motif2ModelArgs' defaults; pass flavor= if they differ",
                           reader.path, args.rope_theta, args.max_seq_len)
    return dataclasses.replace(args, attn_type="sdpa", attn_mask_type="causal")


@torch.no_grad()
def load_model(reader: CheckpointReader, args: Motif2ModelArgs, device: torch.device,
               dtype: torch.dtype) -> Motif2Model:
    """A ``Motif2Model(args)`` in eval mode on ``device``, every parameter in ``dtype`` (as a mixed-precision forward
    casts them) with the checkpoint's values, read one layer at a time; the RoPE table stays fp32."""
    with torch.device("meta"):
        model = Motif2Model(args)
    model.to_empty(device=device)
    model.to(dtype)
    if args.enable_weight_tying:
        model.output.weight = model.tok_embeddings.weight  # to_empty() replaced one side of the tie
    model.rope_cache = precompute_rope_cache(args.head_dim, args.max_seq_len, args.rope_theta).to(device)
    state = model.state_dict()
    keys = list(expected_shapes(args, include_tied_output=False))
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(".".join(key.split(".")[:2]) if key.startswith("layers.") else key, []).append(key)
    for group in groups.values():
        for key, tensor in reader.get_many(group).items():
            state[key].copy_(tensor)
    return model.eval().requires_grad_(False)
