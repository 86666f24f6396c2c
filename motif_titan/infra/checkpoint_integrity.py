"""Checkpoint integrity: a manifest beside every saved step, verified before a step is loaded.

``IntegrityCheckpointing`` adds these to TorchTitan's DCP ``CheckpointManager`` of either version
(``IntegrityCheckpointManager`` below under 0.2.2, ``motif_titan.titan03.checkpoint.IntegrityCheckpointManager``
under 0.3):

* **Manifest on save.** After a step folder (``<dump>/<checkpoint.folder>/step-N``) is completely written, rank 0
  writes ``motif_manifest.json`` into it: every file of the folder (``.metadata``, ``__R_I.distcp``, or the
  safetensors of an HF last save) with its size and zlib CRC-32 checksums of 64 MiB chunks (chunks are hashed on a
  few threads; zlib releases the GIL). It is written last and atomically (temporary name, then ``os.replace``):
  a step folder either has a manifest that describes finished files or none. Sync saves (``checkpoint.async_mode =
  "disabled"``) write it after ``dcp.save`` and a barrier, every rank checksumming its share of the files (so the
  cost per rank stays that of its own shard as the run grows); async saves (``"async"``, ``"async_with_pinned_mem"``)
  write it on rank 0 when the background save has finished, and the future TorchTitan waits on completes only
  after that. CRC-32 rather than a cryptographic hash: it detects flipped bytes and truncation, which is what is
  guarded against, and runs at about 1.7 GB/s per thread here (``benchmarks/checkpoint_integrity.py``).
* **Verification on load.** Before a step is read, every file the manifest lists is checked (size first, then
  checksums), each rank checking every world-size-th file (so a resume reads the step once over all ranks), and
  every rank gets the whole answer. A damaged or incomplete step is reported in the log (the step folder,
  the file, and the size or checksum that differs) and the newest intact step is loaded instead, saying so. If no
  step is intact the run stops with an error that names the checkpoint folder. A step given explicitly by
  ``checkpoint.load_step`` is verified and never replaced by another one: a damaged one stops the run.
  A step folder without a manifest (written before manifests existed, or by another tool) that has a
  ``.metadata`` is loaded with a warning that it cannot be verified; one without either is an interrupted save and
  is skipped (TorchTitan skips it too). ``checkpoint.initial_load_path`` is verified when it holds a manifest (a
  seed checkpoint from ``--checkpoint.create_seed_checkpoint`` or a step folder of another run has one) and
  loaded with the same warning otherwise. If reading a step still fails, the error names the step folder.
* **Model-only last saves can be continued.** TorchTitan's last save holds the model only by default
  (``checkpoint.last_save_model_only = true``); resuming from it used to fail with ``Missing key in checkpoint
  state_dict: dataloader.dp_rank_0``. Now such a step is loaded as weights: the run continues at step N+1 with the
  LR schedule at step N, while the optimizer state, the data position and the token count start fresh. One log
  line says so and names ``--checkpoint.no-last-save-model-only``, which keeps full state in the last save.

* **Step folders describe their model.** Every step folder of a motif2 run gets ``model_args.json`` (the
  model's shapes, eps and RoPE settings, ``motif_titan.model.hf_config``) before its files are written, so
  ``python -m motif_titan.export`` and ``model.flavor = "from_checkpoint"`` need no flavor name.
* **An HF last save is a complete HF model folder** (``checkpoint.last_save_in_hf``): TorchTitan's HF writer gets
  the shard plan of ``motif_titan.export.hf_folder`` (shards of at most 5 GB, the export's file names), GDA's
  lambda vectors stay float32 as in an export, and ``config.json``, ``generation_config.json`` and the tokenizer
  files of ``model.hf_assets_path`` are written beside the shards; the per-rank staging folder is removed.

Not covered: TorchTitan's fault-tolerance (torchft) dataloader checkpoints, which are saved per replica in their
own folder, get no manifest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse
from torchtitan.components.checkpoint import (
    AsyncMode,
    CheckpointManager,
    LR_SCHEDULER,
    MODEL,
    TRAIN_STATE,
)
from torchtitan.tools.logging import logger

MANIFEST_NAME = "motif_manifest.json"
MANIFEST_FORMAT = "motif_titan.checkpoint_manifest/1"
CHUNK_BYTES = 64 << 20
HF_INDEX = "model.safetensors.index.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# ---- manifests -------------------------------------------------------------------------------------------------


def _files_of(step_dir: str) -> list[str]:
    """Paths (relative, '/'-separated) of every file under ``step_dir`` except the manifest and its temporaries."""
    found = []
    for root, _, names in os.walk(step_dir):
        for name in names:
            if name.startswith(MANIFEST_NAME):
                continue
            found.append(os.path.relpath(os.path.join(root, name), step_dir).replace(os.sep, "/"))
    return sorted(found)


def _crc32_of_chunk(path: str, index: int) -> int:
    with open(path, "rb") as f:
        f.seek(index * CHUNK_BYTES)
        return zlib.crc32(f.read(CHUNK_BYTES))


def _chunk_checksums(paths_and_sizes: list[tuple[str, int]], threads: int) -> list[list[int]]:
    """CRC-32 of every CHUNK_BYTES chunk of each file (at least one chunk, so an empty file has one checksum)."""
    jobs = [(i, path, c) for i, (path, size) in enumerate(paths_and_sizes)
            for c in range(max(1, -(-size // CHUNK_BYTES)))]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs)))) as pool:
        sums = list(pool.map(lambda job: _crc32_of_chunk(job[1], job[2]), jobs))
    result: list[list[int]] = [[] for _ in paths_and_sizes]
    for (i, _, _), crc in zip(jobs, sums):
        result[i].append(crc)
    return result


def _hash_threads() -> int:
    """Threads per process: up to 8 per node, shared by the node's ranks."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 1) // max(1, per_node)))


def _entries(step_dir: str, names: list[str], threads: int) -> dict[str, dict]:
    sizes = [os.path.getsize(os.path.join(step_dir, n)) for n in names]
    sums = _chunk_checksums([(os.path.join(step_dir, n), s) for n, s in zip(names, sizes)], threads)
    return {n: {"size": s, "crc32": [f"{c:08x}" for c in cs]} for n, s, cs in zip(names, sizes, sums)}


def write_manifest(step_dir: str, threads: int | None = None, all_ranks: bool = False) -> dict[str, Any]:
    """Checksum every file of a finished step folder and write its manifest last, atomically. Returns it.

    ``all_ranks``: called by every rank of the default process group together (a sync save): rank 0 lists the
    folder, each rank checksums every world-size-th file (DCP writes one or more files per rank, so each rank
    reads about what it wrote), rank 0 gathers the entries and writes the manifest. Otherwise this process does
    it all (rank 0 after an async save)."""
    threads = threads or _hash_threads()
    distributed = all_ranks and dist.is_initialized() and dist.get_world_size() > 1
    if not distributed:
        files = _entries(step_dir, _files_of(step_dir), threads)
    else:
        listing = [_files_of(step_dir) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(listing, src=0)
        names = listing[0]
        mine = _entries(step_dir, names[dist.get_rank()::dist.get_world_size()], threads)
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        files = {n: e for part in gathered for n, e in part.items()}
        files = {n: files[n] for n in names}
    manifest = {"format": MANIFEST_FORMAT, "checksum": "crc32", "chunk_bytes": CHUNK_BYTES, "files": files}
    if distributed and dist.get_rank() != 0:
        return manifest
    final = os.path.join(step_dir, MANIFEST_NAME)
    tmp = f"{final}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return manifest


def _read_manifest(step_dir: str) -> tuple[dict | None, list[str]]:
    """(manifest, []) or (None, [what is wrong with it]); FileNotFoundError if the folder has none."""
    path = os.path.join(step_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    try:
        with open(path) as f:
            manifest = json.load(f)
        manifest["files"], int(manifest["chunk_bytes"])
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("checksum") != "crc32":
            return None, [f"{MANIFEST_NAME}: unknown format {manifest.get('format')!r} (expected {MANIFEST_FORMAT!r})"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, [f"{MANIFEST_NAME} is unreadable ({type(e).__name__}: {e})"]
    if int(manifest["chunk_bytes"]) != CHUNK_BYTES:
        return None, [f"{MANIFEST_NAME}: chunk_bytes {manifest['chunk_bytes']} (this version checks {CHUNK_BYTES})"]
    return manifest, []


def _file_problems(step_dir: str, files: dict[str, dict], threads: int) -> dict[str, str]:
    """{file: what is wrong} for the manifest entries ``files``."""
    problems, to_hash = {}, []
    for name, entry in files.items():
        file_path = os.path.join(step_dir, name)
        if not os.path.isfile(file_path):
            problems[name] = f"{name} is missing"
            continue
        size = os.path.getsize(file_path)
        if size != entry["size"]:
            problems[name] = f"{name} has {size} bytes, the manifest records {entry['size']} (size differs)"
            continue
        to_hash.append((name, file_path, size, entry["crc32"]))
    sums = _chunk_checksums([(p, s) for _, p, s, _ in to_hash], threads)
    for (name, _, _, expected), got in zip(to_hash, sums):
        bad = [i for i, (e, g) in enumerate(zip(expected, got)) if int(e, 16) != g]
        if bad or len(expected) != len(got):
            i = bad[0] if bad else min(len(expected), len(got))
            problems[name] = (f"{name}: checksum differs (crc32 of bytes {i * CHUNK_BYTES}..{(i + 1) * CHUNK_BYTES} "
                              f"is {got[i] if i < len(got) else 'absent'!s:>8}, the manifest records "
                              f"{expected[i] if i < len(expected) else 'none'})")
    return problems


def verify_step(step_dir: str, threads: int | None = None, all_ranks: bool = False) -> list[str]:
    """What is wrong with a step folder according to its manifest: [] if intact. Raises FileNotFoundError if the
    folder has no manifest.

    ``all_ranks``: called by every rank of the default process group together: rank 0 reads the manifest and
    hands it to all, each rank checks every world-size-th file, and every rank gets the whole answer (so a resume
    reads the step once over all ranks, not all of it on rank 0)."""
    threads = threads or _hash_threads()
    distributed = all_ranks and dist.is_initialized() and dist.get_world_size() > 1
    if not distributed:
        manifest, problems = _read_manifest(step_dir)
        if manifest is None:
            return problems
        found = _file_problems(step_dir, manifest["files"], threads)
        return [found[n] for n in manifest["files"] if n in found]
    read: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            read[0] = ("ok", _read_manifest(step_dir))
        except FileNotFoundError as e:
            read[0] = ("missing", str(e))
    dist.broadcast_object_list(read, src=0)
    kind, value = read[0]
    if kind == "missing":
        raise FileNotFoundError(value)
    manifest, problems = value
    if manifest is None:
        return problems
    names = list(manifest["files"])
    mine = names[dist.get_rank()::dist.get_world_size()]
    found_parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(found_parts, _file_problems(step_dir, {n: manifest["files"][n] for n in mine}, threads))
    found = {n: p for part in found_parts for n, p in part.items()}
    return [found[n] for n in names if n in found]


def _is_model_only(step_dir: str) -> bool:
    """A DCP step folder without train_state (a last save with checkpoint.last_save_model_only), or an HF one."""
    if not os.path.isfile(os.path.join(step_dir, ".metadata")):
        return os.path.isfile(os.path.join(step_dir, HF_INDEX))
    keys = FileSystemReader(step_dir).read_metadata().state_dict_metadata
    return not any(k == TRAIN_STATE or k.startswith(TRAIN_STATE + ".") for k in keys)


# ---- the checkpoint manager ------------------------------------------------------------------------------------


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _from_rank0(compute):
    """``compute()`` on rank 0, its result on every rank (exceptions included, re-raised everywhere)."""
    result: list[Any] = [None]
    if _rank() == 0:
        try:
            result[0] = ("ok", compute())
        except Exception as e:  # noqa: BLE001 -- handed to every rank, raised there
            result[0] = ("error", e)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(result, src=0)
    kind, value = result[0]
    if kind == "error":
        raise value
    return value


def _log_on_rank0(log, message: str) -> None:
    if _rank() == 0:
        log(message)


class IntegrityCheckpointing:
    """What this module adds to TorchTitan's DCP CheckpointManager, for either TorchTitan version (mixed in ahead
    of it: ``IntegrityCheckpointManager`` below on 0.2.2, ``motif_titan.titan03.checkpoint`` on 0.3, whose DCP
    manager has the same save and load methods): manifests, verified loads, continuable model-only last saves,
    step folders that describe their model and HF last saves that are complete HF folders. The subclass routes
    its version's load entry point through ``_integrity_load``."""

    model_args = None  # the run's Motif2ModelArgs (None: another model; no description, TorchTitan's HF save)
    hf_assets_path: str | None = None

    def describe(self, model_args, hf_assets_path: str | None) -> None:
        """Give step folders ``model_args.json`` and HF last saves their side files, when the run is motif2's."""
        from motif_titan.model.args import Motif2ModelArgs

        if isinstance(model_args, Motif2ModelArgs):
            self.model_args, self.hf_assets_path = model_args, hf_assets_path

    # ---- save ----

    def _wants_manifest(self, checkpoint_id: str) -> bool:
        # 0.2.2's fault-tolerance dataloader checkpoints get none (0.3 has no such checkpoints)
        return not (getattr(self, "enable_ft_dataloader_checkpoints", False)
                    and checkpoint_id.startswith(self._ft_folder()))

    def dcp_save(self, state_dict, checkpoint_id, async_mode, enable_garbage_collection=False, to_hf=False):
        # an HF save describes its model in config.json, as an export does
        described = self.model_args is not None and not to_hf and self._wants_manifest(checkpoint_id)
        if described and _rank() == 0:
            from motif_titan.model.hf_config import write_model_args

            os.makedirs(checkpoint_id, exist_ok=True)
            write_model_args(checkpoint_id, self.model_args)
        if to_hf and self.model_args is not None:
            self.sd_adapter.fqn_to_index_mapping = self._hf_shard_plan(state_dict)
        result = super().dcp_save(state_dict, checkpoint_id, async_mode, enable_garbage_collection, to_hf)
        if to_hf and self.model_args is not None:
            self._complete_hf_folder(checkpoint_id, state_dict)
        if not self._wants_manifest(checkpoint_id):
            return result
        if async_mode == AsyncMode.DISABLED:
            # dcp.save returns once rank 0 wrote .metadata; the barrier also covers HF consolidation on every rank
            if dist.is_initialized():
                dist.barrier()
            self._write_manifest_logged(checkpoint_id, all_ranks=True)
            return result
        if isinstance(result, AsyncSaveResponse):
            return AsyncSaveResponse(staging_completion=result.staging_completion,
                                     upload_completion=self._then_manifest(result.upload_completion, checkpoint_id))
        return self._then_manifest(result, checkpoint_id)

    def _save_last_step(self, curr_step: int) -> None:
        """TorchTitan's last save, except that an HF last save keeps GDA's lambda vectors in float32 (as an export
        does) while the other tensors take ``checkpoint.export_dtype``."""
        if not (self.last_save_in_hf and self.last_save_model_only and self.model_args is not None):
            return super()._save_last_step(curr_step)
        from motif_titan.export.hf_folder import export_dtype

        states = {k: v.to(export_dtype(k, self.export_dtype)) for k, v in self.states[MODEL].state_dict().items()}
        logger.info(f"Saving the model in HF format ({self.export_dtype}, GDA lambdas in float32) at last step, "
                    f"step {curr_step}.")
        self.dcp_save(states, checkpoint_id=self._create_checkpoint_id(curr_step), async_mode=AsyncMode.DISABLED,
                      enable_garbage_collection=True, to_hf=True)

    def _hf_shard_plan(self, state_dict: dict[str, Any]) -> dict[str, int]:
        """The export's shard plan for this state dict (native names, global sizes of DTensors)."""
        from motif_titan.export.hf_folder import hf_tensor_sizes, shard_plan

        shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
        return shard_plan(hf_tensor_sizes(shapes, lambda k: state_dict[k].dtype, self.model_args))

    def _complete_hf_folder(self, checkpoint_id: str, state_dict: dict[str, Any]) -> None:
        """After TorchTitan's HF writer and consolidation (every rank): config.json, generation config and tokenizer
        files beside the shards, the staging folder gone."""
        if dist.is_initialized():
            dist.barrier()
        if _rank() == 0:
            from pathlib import Path

            from motif_titan.data.text_dataloader import hf_assets_dir
            from motif_titan.export.hf_folder import write_side_files

            assets = hf_assets_dir(self.hf_assets_path) if self.hf_assets_path else None
            dtype = next((v.dtype for k, v in state_dict.items() if ".attention.lambda_" not in k), torch.float32)
            write_side_files(Path(checkpoint_id), self.model_args, assets, dtype)
            shutil.rmtree(os.path.join(checkpoint_id, "sharded"), ignore_errors=True)

    def _then_manifest(self, upload: Future, checkpoint_id: str) -> Future:
        """A future that completes when ``upload`` did and, on rank 0, the manifest is written (the upload
        future of a DCP async save completes on each rank after the coordinator wrote .metadata, i.e. after
        every rank's files are written)."""
        done: Future = Future()

        def finish(f: Future) -> None:
            try:
                value = f.result()
                if _rank() == 0:
                    self._write_manifest_logged(checkpoint_id)
                done.set_result(value)
            except BaseException as e:  # noqa: BLE001 -- surfaced by TorchTitan's _async_wait
                done.set_exception(e)

        upload.add_done_callback(finish)
        return done

    @staticmethod
    def _write_manifest_logged(checkpoint_id: str, all_ranks: bool = False) -> None:
        begin = time.monotonic()
        manifest = write_manifest(checkpoint_id, all_ranks=all_ranks)
        if _rank() != 0:
            return
        nbytes = sum(e["size"] for e in manifest["files"].values())
        logger.info(f"Wrote {MANIFEST_NAME} for {checkpoint_id} ({len(manifest['files'])} files, "
                    f"{nbytes / 1e9:.3f} GB) in {time.monotonic() - begin:.2f} seconds.")

    # ---- load ----

    @staticmethod
    def _is_interrupted_save(step_dir: str) -> bool:
        """Neither a manifest nor DCP / HF metadata: a save that never finished (TorchTitan skips these too)."""
        return not any(os.path.isfile(os.path.join(step_dir, n)) for n in (MANIFEST_NAME, ".metadata", HF_INDEX))

    def _check_step(self, step_dir: str) -> list[str]:
        """[] if loadable (intact, or unverifiable with .metadata: warned); else what is wrong. Every rank calls
        it: each checks its share of the files (``verify_step(all_ranks=True)``)."""
        if _from_rank0(lambda: self._is_interrupted_save(step_dir)):
            return [f"no .metadata and no {MANIFEST_NAME}: an interrupted save"]
        try:
            return verify_step(step_dir, all_ranks=True)
        except FileNotFoundError:
            _log_on_rank0(logger.warning, f"Checkpoint {step_dir} has no {MANIFEST_NAME} (saved by an older version "
                          "or another tool): loading it without verification.")
            return []

    def _newest_intact_step(self) -> int:
        """The newest step of self.folder that is intact (damaged ones are logged); -1 if there are no steps but
        interrupted saves. Every rank calls it and gets the same answer (rank 0 lists the folder)."""
        steps = _from_rank0(lambda: sorted(
            (int(m.group(1)) for name in os.listdir(self.folder)
             if (m := _STEP_DIR.match(name)) and os.path.isdir(os.path.join(self.folder, name))), reverse=True))
        if not steps:
            return -1
        damaged = []
        for step in steps:
            step_dir = self._create_checkpoint_id(step)
            if _from_rank0(lambda: self._is_interrupted_save(step_dir)):
                _log_on_rank0(logger.warning, f"Checkpoint {step_dir} has no .metadata and no {MANIFEST_NAME} (an "
                              "interrupted save): skipped.")
                continue
            problems = self._check_step(step_dir)
            if not problems:
                if damaged:
                    _log_on_rank0(logger.warning, f"Falling back to the newest intact checkpoint: step {step} "
                                  f"({step_dir}); skipped: {', '.join(damaged)}.")
                return step
            for problem in problems:
                _log_on_rank0(logger.error, f"Checkpoint step {step} ({step_dir}) is damaged or incomplete: {problem}")
            damaged.append(f"step-{step}")
        if not damaged:
            return -1
        raise RuntimeError(f"No intact checkpoint in checkpoint folder {self.folder}: {', '.join(damaged)} are "
                           "damaged or incomplete (see the errors above). Remove or repair them, or start the run "
                           "in a new job.dump_folder / checkpoint.folder.")

    def _verified_explicit_step(self, step: int) -> int:
        step_dir = self._create_checkpoint_id(step)
        if not _from_rank0(lambda: os.path.isdir(step_dir)):
            return step  # TorchTitan raises its own FileNotFoundError naming checkpoint.load_step
        problems = self._check_step(step_dir)
        if problems:
            raise RuntimeError(f"checkpoint.load_step = {step}: checkpoint {step_dir} is damaged or incomplete: "
                               + "; ".join(problems))
        return step

    def _verified_initial_load_path(self) -> None:
        path = self.initial_load_path
        if not _from_rank0(lambda: os.path.isdir(path)):
            return  # TorchTitan's error names checkpoint.initial_load_path
        try:
            problems = verify_step(path, all_ranks=True)
        except FileNotFoundError:
            _log_on_rank0(logger.warning, f"checkpoint.initial_load_path {path} has no {MANIFEST_NAME}: loading it "
                          "without verification.")
            return
        if problems:
            raise RuntimeError(f"checkpoint.initial_load_path {path} is damaged or incomplete: "
                               + "; ".join(problems))

    def _integrity_load(self, step: int, torchtitan_load) -> bool:
        """TorchTitan's load (``torchtitan_load``) of the newest intact step, or of ``step`` once verified."""
        if not self.enable:
            return torchtitan_load(step)
        if not os.path.exists(self.folder):
            if self.initial_load_path:
                self._verified_initial_load_path()
            return torchtitan_load(step)
        step = self._newest_intact_step() if step == -1 else self._verified_explicit_step(step)
        if step == -1:
            return torchtitan_load(-1)  # no step folder: TorchTitan starts from scratch (or initial_load_path)
        step_dir = self._create_checkpoint_id(step)
        if step > 0 and TRAIN_STATE not in self.exclude_from_loading and os.path.isdir(step_dir) \
                and _is_model_only(step_dir):
            return self._load_model_only_step(step, step_dir)
        return torchtitan_load(step)

    def _load_model_only_step(self, step: int, step_dir: str) -> bool:
        begin = time.monotonic()
        from_hf = not os.path.isfile(os.path.join(step_dir, ".metadata"))
        self.dcp_load(self._states_to_load(model_only=True), checkpoint_id=step_dir, from_hf=from_hf,
                      from_quantized=False)
        self.states[TRAIN_STATE].load_state_dict({"step": step, "ntokens_seen": 0})
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore")
            for scheduler in self.states[LR_SCHEDULER].schedulers:
                scheduler.last_epoch = step - 1
                scheduler.step()
        logger.warning(f"Checkpoint {step_dir} holds the model only (saved with checkpoint.last_save_model_only = "
                       f"true): loaded its weights and continuing at step {step + 1} with the LR schedule at step "
                       f"{step}; the optimizer state, data position and token count start fresh. To keep full "
                       "state in the last checkpoint, train with --checkpoint.no-last-save-model-only. "
                       f"({time.monotonic() - begin:.2f} s)")
        return True

    def dcp_load(self, state_dict, checkpoint_id, from_hf, from_quantized) -> None:
        try:
            super().dcp_load(state_dict, checkpoint_id, from_hf, from_quantized)
        except Exception as e:
            raise RuntimeError(f"Loading checkpoint {checkpoint_id} failed: {type(e).__name__}: {e}") from e


class IntegrityCheckpointManager(IntegrityCheckpointing, CheckpointManager):
    """TorchTitan 0.2.2's CheckpointManager with ``IntegrityCheckpointing``; ``motif_titan.trainer`` puts it in
    place of the one TorchTitan's Trainer builds (``replacing``)."""

    @classmethod
    def replacing(cls, old: CheckpointManager, trainer) -> "IntegrityCheckpointManager":
        """The manager a TorchTitan Trainer built in its __init__ (before loading anything), rebuilt as this class
        with the same states and config; the old one is closed."""
        old.close()
        job_config = trainer.job_config
        manager = cls(dataloader=trainer.dataloader, model_parts=trainer.model_parts, optimizers=trainer.optimizers,
                      lr_schedulers=trainer.lr_schedulers, states={TRAIN_STATE: trainer},
                      checkpoint_config=job_config.checkpoint, sd_adapter=getattr(old, "sd_adapter", None),
                      base_folder=job_config.job.dump_folder)
        manager.describe(getattr(trainer, "model_args", None), job_config.model.hf_assets_path)
        return manager

    @torch.no_grad()
    def load(self, step: int = -1) -> bool:
        return self._integrity_load(step, super().load)


__all__ = ["IntegrityCheckpointManager", "IntegrityCheckpointing", "MANIFEST_NAME", "verify_step", "write_manifest"]
