"""Streaming checkpoint reading and writing, one tensor at a time: what the upscaler, the export and the eval
model read Motif-2 checkpoints with.

Sources: a directory of HF safetensors (Motif-2 names, as on the Hub; ``config.json`` is read for eps / RoPE
settings when present) or a TorchTitan DCP checkpoint of the motif2 model (model-only, as written by this tool or
by ``last_save_model_only``, or a full training checkpoint: non-model entries are ignored). Tensors are read one
by one (``safe_open`` / one-key DCP loads), never the whole model.

Sources are checked before anything is written (``check_safetensors_file``, ``check_dcp_storage``): a truncated
or damaged file is refused naming the file, instead of failing mid-write.

Destinations are written to a temporary sibling directory (motif_titan.infra.atomic_output) that is renamed to the
destination only once complete:
- ``hf``: the HF model folder ``python -m motif_titan.export`` writes (``motif_titan.export.hf_folder``):
  safetensors shards of at most 5 GB, ``model.safetensors.index.json``, ``config.json`` in Motif's field names
  (the source's config.json as the base, with the new shapes), ``generation_config.json``, and an HF source's
  tokenizer, chat-template and remote-code files;
- ``dcp``: a model-only DCP checkpoint keyed by parameter FQN, which TorchTitan's CheckpointManager loads with
  ``checkpoint.initial_load_path`` (``initial_load_model_only`` is its default). Each tensor is produced only when
  DCP's writer asks for it and goes to its own file, so at most one tensor is held at a time.
"""

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from motif_titan.export.hf_folder import write_safetensors, write_side_files
from motif_titan.model import Motif2Model, Motif2ModelArgs
from motif_titan.model.hf_config import MODEL_ARGS_FILE, checkpoint_model_args, read_hf_config, shape_differences
from motif_titan.model.state_dict_adapter import from_hf_name, split_layer_index, to_hf_name

# what a checkpoint's description gives that its tensors cannot tell
SETTINGS_NOT_IN_TENSORS = ("norm_eps", "subln_eps", "polynorm_eps", "rope_theta", "max_seq_len")
# entries of a full TorchTitan checkpoint that are not model parameters
_TRAINING_STATE_PREFIXES = ("optimizer", "lr_scheduler", "dataloader", "train_state")


class NotMotif2Error(ValueError):
    """The source is not a Motif-2 checkpoint."""


class CorruptCheckpointError(ValueError):
    """A source file is truncated or damaged."""


def check_safetensors_file(file: Path, label: str = "--src") -> None:
    """The layout safetensors requires, checked from the header alone: an 8-byte little-endian header length N,
    N bytes of JSON, then exactly the data bytes the header's ``data_offsets`` cover. Errors start with ``label``
    (the command-line option that named the checkpoint) and the file."""
    size = file.stat().st_size
    where = f"{label} {file}"
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptCheckpointError(f"{where}: truncated or not safetensors: {size} bytes, fewer than the "
                                         "8-byte header length")
        header_len = int.from_bytes(head, "little")
        if header_len > size - 8:
            raise CorruptCheckpointError(f"{where}: truncated or not safetensors: the header length says "
                                         f"{header_len} bytes of JSON, the file has {size - 8} after it")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptCheckpointError(f"{where}: damaged safetensors header (not JSON: {e})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{where}: damaged safetensors header (a JSON object was expected)")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise CorruptCheckpointError(f"{where}: damaged safetensors header: tensor {name!r} has data_offsets "
                                         f"{offsets!r}, expected [begin, end] with 0 <= begin <= end")
        data_end = max(data_end, offsets[1])
    data = size - 8 - header_len
    if data_end > data:
        raise CorruptCheckpointError(f"{where}: truncated: its tensors need {data_end} bytes of data after the "
                                     f"header, the file holds {data}")
    if data_end < data:
        raise CorruptCheckpointError(f"{where}: damaged: {data - data_end} bytes after the last tensor's data "
                                     "(safetensors refuses trailing bytes)")


def check_dcp_storage(path: Path, metadata, entries: dict, label: str = "--src") -> None:
    """Every stored chunk of ``entries`` (the keys the upscaler reads) is recorded in ``.metadata`` and lies inside
    an existing ``.distcp`` file (offset + length <= its size), so a truncated or missing file is named before
    anything is written."""
    storage = metadata.storage_data or {}
    chunks: dict[str, list] = {}
    for index, info in storage.items():
        if index.fqn in entries:
            chunks.setdefault(index.fqn, []).append(info)
    sizes: dict[str, int | None] = {}
    for key in entries:
        if key not in chunks:
            raise CorruptCheckpointError(f"{label} {path / '.metadata'}: damaged: no stored data recorded for "
                                         f"{key!r}")
        for info in chunks[key]:
            file = path / info.relative_path
            if info.relative_path not in sizes:
                sizes[info.relative_path] = file.stat().st_size if file.is_file() else None
            size = sizes[info.relative_path]
            if size is None:
                raise CorruptCheckpointError(f"{label} {file}: missing: .metadata places {key!r} in it")
            if info.offset + info.length > size:
                raise CorruptCheckpointError(
                    f"{label} {file}: truncated: {size} bytes, but .metadata places {key!r} at bytes "
                    f"{info.offset}..{info.offset + info.length}")


class CheckpointReader:
    """Native (motif_titan) parameter names -> tensors, read lazily one at a time. ``description``: the model the
    folder says it holds (its ``model_args.json`` or ``config.json``), None if it says nothing; ``label``: the
    command-line option that named it, for errors."""

    path: Path
    format: str
    hf_config: dict
    label: str = "--src"
    description: Motif2ModelArgs | None = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def get_many(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """Several tensors at once (a layer's): a format may read them in one pass."""
        return {key: self.get(key) for key in keys}


class HFSafetensorsReader(CheckpointReader):
    format = "hf"

    def __init__(self, path: Path, label: str = "--src"):
        self.path, self.label = path, label
        self.hf_config = read_hf_config(path) or {}
        self.description = checkpoint_model_args(path)
        self._file_of: dict[str, Path] = {}
        self._hf_key: dict[str, str] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        files = sorted(path.glob("*.safetensors"))
        for file in files:
            check_safetensors_file(file, label)
        for file in files:
            with safe_open(file, framework="pt") as f:
                for hf_key in f.keys():
                    try:
                        native = from_hf_name(hf_key)
                    except KeyError:
                        raise NotMotif2Error(f"{label} {path} is not a Motif-2 checkpoint: tensor {hf_key!r} in "
                                             f"{file.name} has no Motif-2 name") from None
                    if native is None:
                        continue
                    self._file_of[native], self._hf_key[native] = file, hf_key
                    self._shapes[native] = tuple(f.get_slice(hf_key).get_shape())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def get(self, key: str) -> torch.Tensor:
        with safe_open(self._file_of[key], framework="pt") as f:
            return f.get_tensor(self._hf_key[key])


def _is_motif2_name(key: str) -> bool:
    try:
        to_hf_name(key)
    except KeyError:
        return False
    return True


class _ReaderOfReadMetadata(FileSystemReader):
    """A FileSystemReader that hands ``dcp.load`` metadata read once: by itself it unpickles ``.metadata`` again on
    every call, i.e. for every tensor the upscaler streams."""

    def __init__(self, path: Path, metadata):
        super().__init__(str(path))
        self._metadata = metadata

    def read_metadata(self, *args, **kwargs):
        return self._metadata


class DCPReader(CheckpointReader):
    format = "dcp"

    def __init__(self, path: Path, label: str = "--src"):
        self.path, self.label = path, label
        self.hf_config = {}
        self.description = checkpoint_model_args(path)
        try:
            metadata = FileSystemReader(str(path)).read_metadata()
        except Exception as e:  # a truncated or foreign pickle: EOFError, UnpicklingError, AttributeError, ...
            raise CorruptCheckpointError(f"{label} {path / '.metadata'}: unreadable DCP metadata, the file may be "
                                         f"truncated ({type(e).__name__}: {e})") from None
        self._meta: dict[str, TensorStorageMetadata] = {}
        for key, meta in metadata.state_dict_metadata.items():
            if key.split(".", 1)[0] in _TRAINING_STATE_PREFIXES:
                continue
            if not (_is_motif2_name(key) and isinstance(meta, TensorStorageMetadata)):
                raise NotMotif2Error(f"{label} {path} is not a Motif-2 checkpoint: entry {key!r} is not a Motif-2 "
                                     "parameter")
            self._meta[key] = meta
        check_dcp_storage(path, metadata, self._meta, label)
        self._reader = _ReaderOfReadMetadata(path, metadata)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: tuple(meta.size) for key, meta in self._meta.items()}

    def get(self, key: str) -> torch.Tensor:
        return self.get_many([key])[key]

    def get_many(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """One ``dcp.load`` for all ``keys`` (each call plans over the whole checkpoint's metadata)."""
        state = {key: torch.empty(tuple(self._meta[key].size), dtype=self._meta[key].properties.dtype)
                 for key in keys}
        with _single_process_dcp():
            dcp.load(state, storage_reader=self._reader, no_dist=True)
        return state


@contextlib.contextmanager
def _single_process_dcp() -> Iterator[None]:
    """DCP warns on every call without a process group (one process is what the upscaler means), and wraps
    errors in a CheckpointException (a BaseException): re-raise the original error of our single rank."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            yield
        except CheckpointException as e:
            if len(e.failures) == 1:
                (original, _trace), = e.failures.values()
                raise original from None
            raise


def open_checkpoint(path: str | os.PathLike, label: str = "--src") -> CheckpointReader:
    """A reader of a DCP step folder or an HF safetensors folder; errors start with ``label`` and the path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{label} {path}: no such directory")
    if (path / ".metadata").is_file():
        return DCPReader(path, label)
    if any(path.glob("*.safetensors")):
        return HFSafetensorsReader(path, label)
    raise NotMotif2Error(f"{label} {path} is not a Motif-2 checkpoint: neither a TorchTitan DCP checkpoint "
                         "(.metadata) nor HF safetensors (*.safetensors)")


def infer_model_args(reader: CheckpointReader) -> Motif2ModelArgs:
    """The source's shapes, read off its tensors; eps, RoPE settings and the context length from the folder's own
    description (``model_args.json`` or ``config.json``) when it has one, whose shapes must then be the tensors';
    every required tensor must be there with a shape that fits."""
    shapes = reader.shapes()
    where = f"{reader.label} {reader.path} is not a Motif-2 checkpoint"

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise NotMotif2Error(f"{where}: missing {key!r} ({to_hf_name(key)!r} in HF names)")
        return shapes[key]

    vocab, dim = need("tok_embeddings.weight")
    layer_ids = sorted({index for index, _ in map(split_layer_index, shapes) if index is not None})
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        raise NotMotif2Error(f"{where}: layers must be numbered 0..L-1, found {layer_ids}")
    (head_dim,) = need("layers.0.attention.lambda_q1")
    q_rows, _ = need("layers.0.attention.wq.weight")
    kv_rows, _ = need("layers.0.attention.wk.weight")
    _, wo_cols = need("layers.0.attention.wo.weight")
    ffn, _ = need("layers.0.feed_forward.w1.weight")
    n_heads, n_kv = q_rows // head_dim, kv_rows // head_dim
    n_signal = wo_cols // (2 * head_dim)
    described = reader.description
    overrides = {} if described is None else {f: getattr(described, f) for f in SETTINGS_NOT_IN_TENSORS}
    try:
        args = Motif2ModelArgs(
            dim=dim, n_layers=len(layer_ids), n_heads=n_heads, n_kv_heads=n_kv, n_noise_heads=n_heads - n_signal,
            head_dim=head_dim, ffn_hidden_dim=ffn, vocab_size=vocab,
            enable_weight_tying=_is_tied(reader, shapes), **overrides,
        )
    except ValueError as e:
        raise NotMotif2Error(f"{where}: its shapes do not form a GDA model ({e})") from None
    expected = expected_shapes(args, include_tied_output=False)
    for key, shape in expected.items():
        if need(key) != shape:
            raise NotMotif2Error(f"{where}: {key!r} has shape {list(shapes[key])}, expected {list(shape)} for "
                                 f"dim {dim}, {n_heads} q heads, {n_kv} kv heads, head_dim {head_dim}")
    extra = sorted(set(shapes) - set(expected) - {"output.weight"})
    if extra:
        raise NotMotif2Error(f"{where}: unexpected tensors {extra[:3]}")
    if described is not None and (differences := shape_differences(described, args, model_label="tensors")):
        raise NotMotif2Error(f"{reader.label} {reader.path}: its description ({MODEL_ARGS_FILE} or config.json) "
                             f"does not match its tensors: {'; '.join(differences)}")
    return args


def _is_tied(reader: CheckpointReader, shapes: dict[str, tuple[int, ...]]) -> bool:
    """HF drops a tied head; a TorchTitan DCP checkpoint stores it under both names, with equal values."""
    if "output.weight" not in shapes:
        return True
    if reader.format != "dcp" or shapes["output.weight"] != shapes.get("tok_embeddings.weight"):
        return False
    return torch.equal(reader.get("output.weight"), reader.get("tok_embeddings.weight"))


def expected_shapes(args: Motif2ModelArgs, include_tied_output: bool = True) -> dict[str, tuple[int, ...]]:
    """Native name -> shape of every parameter of a model with these args, in model order: the state dict of the
    model built on the meta device (a tied head is listed, as in that state dict, unless ``include_tied_output``
    is False)."""
    with torch.device("meta"):
        model = Motif2Model(args)
    shapes = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    if args.enable_weight_tying and not include_tied_output:
        del shapes["output.weight"]
    return shapes


TensorSource = Callable[[str], torch.Tensor]


def write_hf(directory: Path, args: Motif2ModelArgs, shapes: dict[str, tuple[int, ...]], produce: TensorSource,
             dtype_of: Callable[[str], torch.dtype], dtype: torch.dtype, assets: Path | None,
             on_tensor: Callable[[str], None]) -> None:
    """An HF model folder (motif_titan.export.hf_folder: shards of at most 5 GB, index, config.json in Motif's
    names, generation config, and the tokenizer / template / remote-code files of ``assets``)."""
    write_safetensors(directory, args, shapes, produce, dtype_of, on_tensor)
    write_side_files(directory, args, assets, dtype)


class _LazySavePlanner(DefaultSavePlanner):
    """DCP save planner whose state dict holds shape-only placeholders; the real tensor of each entry is made
    when the writer asks for it."""

    def __init__(self, produce: TensorSource, on_tensor: Callable[[str], None]):
        super().__init__()
        self._produce, self._on_tensor = produce, on_tensor

    def resolve_data(self, write_item):
        tensor = self._produce(write_item.index.fqn)
        self._on_tensor(write_item.index.fqn)
        return tensor


def write_dcp(directory: Path, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, torch.dtype],
              produce: TensorSource, on_tensor: Callable[[str], None]) -> None:
    """A model-only DCP checkpoint (keys = parameter FQNs), one file per tensor, tensors made one at a time."""
    placeholders = {
        key: torch.empty_strided(shape, (0,) * len(shape), dtype=dtypes[key]) for key, shape in shapes.items()
    }
    with _single_process_dcp():
        dcp.save(placeholders, storage_writer=FileSystemWriter(str(directory), single_file_per_rank=False),
                 planner=_LazySavePlanner(produce, on_tensor), no_dist=True)
