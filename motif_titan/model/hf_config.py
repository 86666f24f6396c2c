"""A Motif-2 model's description outside the trainer: the HF ``config.json`` in Motif's field names, and the
``model_args.json`` that every step folder a motif_titan run saves carries beside its DCP files.

``to_hf_config`` and ``from_hf_config`` are the one mapping between ``Motif2ModelArgs`` and Motif's HF fields
(../shared/spec/hf_format.md: what Motif's HF remote code, vLLM fork and MLX port read). An export writes every
field a loader reads, because the loaders fill missing ones with guesses that are wrong for GDA layouts:
``num_noise_heads`` absent is read as ``num_attention_heads / 2``, ``head_dim`` absent as ``hidden_size /
num_attention_heads`` (4096 / 40 for the 12.7B).

``checkpoint_model_args(folder)`` reads a folder's own description: ``model_args.json`` (a motif_titan step
folder, written by ``motif_titan.infra.checkpoint_integrity``), else ``config.json`` (an HF folder).
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

from .args import Motif2ModelArgs

MODEL_ARGS_FILE = "model_args.json"
HF_CONFIG_FILE = "config.json"
ARCHITECTURE = "MotifForCausalLM"
HIDDEN_ACT = "poly_norm"

# Motif2ModelArgs field -> HF config field, for what both describe.
HF_FIELDS = {
    "dim": "hidden_size",
    "ffn_hidden_dim": "intermediate_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",  # every q head, signal and noise
    "n_kv_heads": "num_key_value_heads",
    "n_noise_heads": "num_noise_heads",
    "head_dim": "head_dim",
    "vocab_size": "vocab_size",
    "norm_eps": "rms_norm_eps",
    "subln_eps": "attn_rms_norm_eps",
    "rope_theta": "rope_theta",
    "max_seq_len": "max_position_embeddings",
    "enable_weight_tying": "tie_word_embeddings",
}
# The fields that decide a parameter's shape: a checkpoint and a flavor that differ in one cannot load each other.
SHAPE_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "n_noise_heads", "head_dim", "ffn_hidden_dim",
                "vocab_size", "enable_weight_tying")
# Fields that describe how one run executes the model, not the model: not recorded in a step folder.
_RUN_FIELDS = ("attn_type", "attn_mask_type", "polynorm_backend", "gda_value_path", "resolved_gda_value_path",
               "depth_init")


class ModelDescriptionError(ValueError):
    """A config.json or model_args.json that does not describe a Motif-2 model."""


def to_hf_config(args: Motif2ModelArgs, base: dict[str, Any] | None = None, *, torch_dtype: str | None = None,
                 bos_token_id: int | None = None, eos_token_id: int | None = None) -> dict[str, Any]:
    """The ``config.json`` of a model with ``args``: ``base`` (a source model's config.json) with every field the
    model decides set from ``args``; the fields of ``base`` the model does not decide (``auto_map``, ``rope_scaling``,
    ``use_bias``, token ids...) are kept. ``num_noise_heads`` is written whenever the layout is grouped (more
    signal heads per group than one) or ``base`` had it; for Differential-Transformer pairs the loaders' default
    (half the q heads) is exact."""
    config = dict(base or {})
    config["architectures"] = [ARCHITECTURE]
    config.setdefault("model_type", "Motif")
    for field, hf_field in HF_FIELDS.items():
        config[hf_field] = getattr(args, field)
    if args.gda_ratio == 1 and "num_noise_heads" not in (base or {}):
        del config["num_noise_heads"]
    config["hidden_act"] = HIDDEN_ACT
    config.setdefault("k_ratio", 1)
    if torch_dtype is not None:
        config["torch_dtype"] = torch_dtype
    for name, value in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id)):
        if value is not None:
            config[name] = value
    return config


def _number(config: dict, key: str, where: str, kind: type, default=None):
    value = config.get(key, default)
    if value is None:
        raise ModelDescriptionError(f"{where}: no {key!r}; a Motif-2 config.json has it")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        expected = "an integer" if kind is int else "a number"
        raise ModelDescriptionError(f"{where}: {key} = {value!r}, expected {expected}")
    return kind(value)


def from_hf_config(config: dict[str, Any], where: str) -> Motif2ModelArgs:
    """``Motif2ModelArgs`` from a Motif ``config.json`` (``where`` names the file in errors). Missing
    ``num_noise_heads`` and ``head_dim`` are filled as Motif's loaders fill them, and refused where that guess
    cannot be right (a ``hidden_size`` the heads do not divide)."""
    hidden_act = config.get("hidden_act", HIDDEN_ACT)
    if hidden_act != HIDDEN_ACT:
        raise ModelDescriptionError(f"{where}: hidden_act = {hidden_act!r}; a Motif-2 model has {HIDDEN_ACT!r}")
    architectures = config.get("architectures", [ARCHITECTURE])
    if ARCHITECTURE not in (architectures or []):
        raise ModelDescriptionError(f"{where}: architectures = {architectures!r}; a Motif-2 model is "
                                    f"[{ARCHITECTURE!r}]")
    n_heads = _number(config, "num_attention_heads", where, int)
    dim = _number(config, "hidden_size", where, int)
    if "head_dim" not in config and dim % n_heads:
        raise ModelDescriptionError(f"{where}: no 'head_dim', and hidden_size {dim} is not a multiple of "
                                    f"num_attention_heads {n_heads}; add head_dim")
    values = {
        "dim": dim,
        "n_heads": n_heads,
        "ffn_hidden_dim": _number(config, "intermediate_size", where, int),
        "n_layers": _number(config, "num_hidden_layers", where, int),
        "n_kv_heads": _number(config, "num_key_value_heads", where, int, n_heads),
        "n_noise_heads": _number(config, "num_noise_heads", where, int, n_heads // 2),
        "head_dim": _number(config, "head_dim", where, int, dim // n_heads),
        "vocab_size": _number(config, "vocab_size", where, int),
        "enable_weight_tying": bool(config.get("tie_word_embeddings", False)),
    }
    defaults = Motif2ModelArgs.__dataclass_fields__
    for field in ("norm_eps", "subln_eps", "rope_theta"):
        values[field] = _number(config, HF_FIELDS[field], where, float, defaults[field].default)
    values["max_seq_len"] = _number(config, "max_position_embeddings", where, int, defaults["max_seq_len"].default)
    try:
        return Motif2ModelArgs(**values)
    except ValueError as e:
        raise ModelDescriptionError(f"{where}: not a Motif-2 GDA layout ({e})") from None


def model_args_record(args: Motif2ModelArgs) -> dict[str, Any]:
    """What a step folder's ``model_args.json`` holds: the model's fields (shapes, eps, RoPE), not the run's."""
    return {k: v for k, v in dataclasses.asdict(args).items() if k not in _RUN_FIELDS}


def model_args_from_record(record: dict[str, Any], where: str) -> Motif2ModelArgs:
    known = {f.name for f in dataclasses.fields(Motif2ModelArgs) if f.init} - set(_RUN_FIELDS)
    # Records written while the args subclassed TorchTitan 0.2.2's BaseModelArgs carry its marker field.
    record = {k: v for k, v in record.items() if k != "_enforced"}
    unknown = sorted(set(record) - known)
    if unknown:
        raise ModelDescriptionError(f"{where}: unknown fields {unknown}; known: {sorted(known)}")
    try:
        return Motif2ModelArgs(**record)
    except (TypeError, ValueError) as e:
        raise ModelDescriptionError(f"{where}: {e}") from None


def write_model_args(folder: str | Path, args: Motif2ModelArgs) -> None:
    path = Path(folder) / MODEL_ARGS_FILE
    tmp = path.with_name(f".{MODEL_ARGS_FILE}.tmp")
    tmp.write_text(json.dumps(model_args_record(args), indent=2) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelDescriptionError(f"{path}: unreadable ({e})") from None
    if not isinstance(value, dict):
        raise ModelDescriptionError(f"{path}: a JSON object was expected")
    return value


def read_hf_config(folder: str | Path) -> dict | None:
    path = Path(folder) / HF_CONFIG_FILE
    return _read_json(path) if path.is_file() else None


def checkpoint_model_args(folder: str | Path) -> Motif2ModelArgs | None:
    """The model a checkpoint folder describes: its ``model_args.json``, else its ``config.json``; None if it has
    neither."""
    folder = Path(folder)
    if (folder / MODEL_ARGS_FILE).is_file():
        return model_args_from_record(_read_json(folder / MODEL_ARGS_FILE), str(folder / MODEL_ARGS_FILE))
    config = read_hf_config(folder)
    return None if config is None else from_hf_config(config, str(folder / HF_CONFIG_FILE))


def shape_differences(checkpoint: Motif2ModelArgs, model: Motif2ModelArgs, names: str = "native",
                      model_label: str = "flavor") -> list[str]:
    """``"num_noise_heads: checkpoint 8, flavor 20"`` for each shape field that differs (``names = "hf"``: in
    config.json's names)."""
    out = []
    for field in SHAPE_FIELDS:
        a, b = getattr(checkpoint, field), getattr(model, field)
        if a != b:
            out.append(f"{HF_FIELDS[field] if names == 'hf' else field}: checkpoint {a}, {model_label} {b}")
    return out


def with_run_fields(shapes: Motif2ModelArgs, run: Motif2ModelArgs) -> Motif2ModelArgs:
    """``shapes`` (a checkpoint's model) executed as ``run`` (a flavor) executes: attention kind, masks, kernels."""
    return dataclasses.replace(shapes, **{f: getattr(run, f) for f in _RUN_FIELDS
                                          if f != "resolved_gda_value_path"})
