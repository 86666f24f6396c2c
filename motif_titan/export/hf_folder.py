"""The HF model folder of a Motif-2 model, as Motif's loaders read it (../shared/spec/hf_format.md), written the
same way by ``python -m motif_titan.export``, by the upscaler's ``--format hf`` and by a training run's HF save
(``checkpoint.last_save_in_hf``):

* ``model-0000k-of-0000n.safetensors`` shards of at most ``MAX_SHARD_BYTES`` in model order (``shard_plan``; a
  training save hands the same plan to TorchTitan's HF writer) and ``model.safetensors.index.json``;
* ``config.json`` in Motif's field names (``motif_titan.model.hf_config.to_hf_config``; a source ``config.json``
  in the assets folder is the base, its fields kept unless the model decides them), ``generation_config.json``;
* from the assets folder when present: tokenizer files, chat templates and remote-code ``*.py`` files.

GDA's lambda vectors stay float32 in every export, as in Motif's own files; the other tensors take the export
dtype.
"""

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from motif_titan.model.args import Motif2ModelArgs
from motif_titan.model.hf_config import HF_CONFIG_FILE, read_hf_config, to_hf_config
from motif_titan.model.state_dict_adapter import to_hf_name

MAX_SHARD_BYTES = 5_000_000_000  # transformers' default max_shard_size ("5GB")
INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float16: "float16", torch.float64: "float64"}


def shard_file_name(index: int, count: int) -> str:
    """The HF name of shard ``index`` (1-based) of ``count``, which TorchTitan's HF writer also gives its files."""
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def shard_plan(sizes: dict[str, int], max_bytes: int = MAX_SHARD_BYTES) -> dict[str, int]:
    """HF tensor name -> 1-based shard index: tensors in the given (model) order, a new shard whenever the next
    tensor would take the current one past ``max_bytes`` (a tensor larger than that gets a shard of its own)."""
    plan, index, used = {}, 1, 0
    for name, nbytes in sizes.items():
        if used and used + nbytes > max_bytes:
            index, used = index + 1, 0
        plan[name] = index
        used += nbytes
    return plan


def export_dtype(native_key: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a tensor is exported in: GDA's lambda vectors stay float32 (Motif's files keep them so, and
    lambda = exp(lambda_q . lambda_k) amplifies their rounding), every other tensor ``dtype``."""
    return torch.float32 if ".attention.lambda_" in native_key else dtype


def hf_tensor_sizes(shapes: dict[str, tuple[int, ...]], dtype_of: Callable[[str], torch.dtype],
                    args: Motif2ModelArgs) -> dict[str, int]:
    """HF name -> bytes, in model order; a tied head is not stored (HF keeps only the embedding)."""
    return {to_hf_name(key): math.prod(shape) * dtype_of(key).itemsize for key, shape in shapes.items()
            if not (args.enable_weight_tying and key == "output.weight")}


def write_safetensors(directory: Path, args: Motif2ModelArgs, shapes: dict[str, tuple[int, ...]],
                      produce: Callable[[str], torch.Tensor], dtype_of: Callable[[str], torch.dtype],
                      on_tensor: Callable[[str], None] = lambda key: None,
                      max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """The shards and the index; one shard's tensors are held at a time, each produced when its shard is
    written."""
    sizes = hf_tensor_sizes(shapes, dtype_of, args)
    plan = shard_plan(sizes, max_shard_bytes)
    count = max(plan.values(), default=0)
    native = {to_hf_name(key): key for key in shapes}
    weight_map = {}
    for index in range(1, count + 1):
        name = shard_file_name(index, count)
        shard = {}
        for hf_key in (k for k, i in plan.items() if i == index):
            key = native[hf_key]
            shard[hf_key] = produce(key).to(dtype_of(key)).contiguous()
            on_tensor(key)
            weight_map[hf_key] = name
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        del shard
    if args.enable_weight_tying and "output.weight" in shapes:
        on_tensor("output.weight")
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": sum(sizes.values())},
                                                    "weight_map": weight_map}, indent=2) + "\n")


def special_token_ids(assets: Path | None) -> tuple[int | None, int | None]:
    """(bos, eos) ids of the tokenizer in ``assets``, None where it has none (or there is no tokenizer)."""
    if assets is None or not (assets / "tokenizer.json").is_file():
        return None, None
    from motif_titan.titan_version import load_hf_tokenizer

    tokenizer = load_hf_tokenizer(str(assets))
    return getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)


def write_side_files(directory: Path, args: Motif2ModelArgs, assets: Path | None, dtype: torch.dtype) -> None:
    """``config.json`` and ``generation_config.json``, plus the tokenizer, chat-template and remote-code files of
    ``assets`` (a source model's HF folder or a tokenizer folder) when it has them."""
    base = read_hf_config(assets) if assets is not None else None
    bos, eos = special_token_ids(assets)
    if base is not None:  # the source model's own ids win over what the tokenizer says
        bos, eos = base.get("bos_token_id", bos), base.get("eos_token_id", eos)
    config = to_hf_config(args, base, torch_dtype=DTYPE_NAMES[dtype], bos_token_id=bos, eos_token_id=eos)
    (directory / HF_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if assets is not None and (assets / GENERATION_CONFIG_FILE).is_file():
        shutil.copyfile(assets / GENERATION_CONFIG_FILE, directory / GENERATION_CONFIG_FILE)
    else:
        generation = {k: v for k, v in (("bos_token_id", bos), ("eos_token_id", eos)) if v is not None}
        (directory / GENERATION_CONFIG_FILE).write_text(json.dumps(generation, indent=2) + "\n")
    if assets is None:
        return
    copied = [assets / n for n in (*TOKENIZER_FILES, *CHAT_TEMPLATE_FILES)] + sorted(assets.glob("*.py"))
    for file in copied:
        if file.is_file() and file.resolve() != (directory / file.name).resolve():
            shutil.copyfile(file, directory / file.name)
