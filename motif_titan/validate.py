"""Refuse a bad job before any work: one entry point, ``validate_job_config(job_config, world_size)``.

TorchTitan 0.2.2 hands TOML values to its config dataclasses as TOML typed them (``lr = "fast"`` arrives as the
string ``"fast"``, ``ns_steps = 2.5`` as a float; tyro only warns), and range-checks almost nothing: a bad value
fails later, in the first forward or as a bare ``AssertionError``. CLI values are converted by tyro, which
refuses a wrong type itself (exit code 2, naming the option).

Sites, one per rule:

* ``check_config_file`` (the launcher calls it before TorchTitan's ConfigManager): unknown TOML sections and
  keys, naming the file, the line and the closest valid key.
* ``check_torchtitan_fields``: the fields of TorchTitan's own sections that motif_titan's code (or TorchTitan's
  trainer, unguarded) depends on -- types, ranges, batch sizes; the parallel degrees against the world size in
  ``motif_titan.infra.job_rules.check_parallel_degrees``.
* each motif_titan section validates its own fields, with the helpers of ``motif_titan.config_checks``:
  ``[optimizer]`` (TorchTitan's fields and Muon's) in ``motif_titan.optim.builder.validate_muon_config``,
  ``[model] gda_value_path`` in ``motif_titan.model.args.validate_model_fields``, ``[curriculum]`` in
  ``motif_titan.data.curriculum.validate_curriculum_fields`` / ``parse_curriculum`` and
  ``motif_titan.data.ramps.validate_ramps``; ``[guard]`` in ``GuardConfig`` (when the section is read) and
  against ``[parallelism]`` in ``motif_titan.infra.nonfinite_guard.check_guard_with_parallelism``.
* a motif2 flavor takes what the model needs of the job (sequence length, GDA value path, resolved once) in
  ``Motif2ModelArgs.update_from_config``; the job's parallelism and converters are checked against the flavor in
  ``motif_titan.infra.job_rules.check_motif2_job``.

``validate_job_config`` runs them all, in that order; the code that builds the job trusts what passed.

Data files are checked where they are read (the dataloader builders run before the model is built): errors name
the file and the 1-based line.
"""

import difflib
import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from motif_titan.config_checks import (ConfigError, expect, expect_bool, expect_str, expect_str_list, is_int,
                                       is_number, refuse)
from motif_titan.infra.job_rules import check_parallel_degrees, data_parallel_degree

__all__ = ["ConfigError", "check_config_file", "launched_world_size", "validate_job_config"]

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def config_file_of(args: list[str]) -> str | None:
    """The ``--job.config_file`` of a command line (as TorchTitan's ConfigManager finds it)."""
    for i, arg in enumerate(args):
        key, _, value = arg.partition("=")
        if key in ("--job.config_file", "--job.config-file"):
            return value if value else (args[i + 1] if i + 1 < len(args) else None)
    return None


def _key_line(text: str, section: str, key: str) -> int | None:
    """1-based line of ``key`` in ``[section]`` (or of the ``[section]`` header when key is None)."""
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _section_fields(cls) -> dict[str, Any]:
    return {f.name: f.type for f in fields(cls)}


def unknown_config_keys(toml: dict, config_cls) -> list[tuple[str, str, list[str]]]:
    """(section path, key, valid keys) of every key of ``toml`` that ``config_cls`` has no field for."""
    found = []

    def walk(section: str, table: dict, cls) -> None:
        valid = _section_fields(cls)
        for key, value in table.items():
            if key not in valid:
                found.append((section, key, sorted(valid)))
            elif is_dataclass(valid[key]) and isinstance(value, dict):
                walk(f"{section}.{key}" if section else key, value, valid[key])

    walk("", toml, config_cls)
    return found


def _motif_titan_field(section: str, key: str) -> bool:
    """Whether ``section.key`` is a field motif_titan.job_config adds (unknown without custom_config_module)."""
    from motif_titan.job_config import JobConfig

    cls = JobConfig
    for part in [p for p in section.split(".") if p]:
        types = _section_fields(cls)
        if part not in types or not is_dataclass(types[part]):
            return False
        cls = types[part]
    return key in _section_fields(cls)


def check_config_file(args: list[str]) -> None:
    """Refuse a ``--job.config_file`` that is not TOML or has keys no config section defines, naming the file,
    the line, the key and the closest valid key. TorchTitan's own message for an unknown key points at a
    ``run_train.sh`` this project does not have."""
    path = config_file_of(args)
    if path is None:
        return
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"job.config_file = {path!r}: cannot read it ({error.strerror})") from error
    try:
        toml = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error

    from torchtitan.config import ConfigManager

    manager = ConfigManager()
    config_cls = manager._maybe_add_custom_config(args, toml)  # TorchTitan's JobConfig merged with custom_config_module
    unknown = unknown_config_keys(toml, config_cls)
    if not unknown:
        return
    section, key, valid = unknown[0]
    name = f"{section}.{key}" if section else key
    line = _key_line(text, section, key) if section else _key_line(text, key, None)
    where = f"{path}, line {line}" if line else path
    what = "key" if section else "section"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    sections = _section_fields(config_cls)
    elsewhere = [f"{s}.{key}" for s, t in sections.items() if section and is_dataclass(t) and key in _section_fields(t)]
    if close:
        hint = f"did you mean {(section + '.' if section else '') + close[0]!r}?"
    elif elsewhere:
        hint = f"did you mean {elsewhere[0]!r}?"
    else:
        hint = (f"valid keys of [{section}]: " if section else "valid sections: ") + str(valid)
    if _motif_titan_field(section, key):
        hint += " (motif_titan's fields need [job] custom_config_module = \"motif_titan.job_config\")"
    raise ConfigError(f"{where}: unknown {what} {name!r}; {hint}")


# -- TorchTitan's fields ------------------------------------------------------------------------------------------

FSDP_RESHARD_POLICIES = ("always", "never", "default")
DECAY_TYPES = ("linear", "sqrt", "cosine")


def launched_world_size(job_config) -> int | None:
    """The world size TorchTitan will initialize: NGPU under a fake/local-tensor comm mode, else WORLD_SIZE."""
    mode = getattr(job_config.comm, "mode", None)
    value = os.environ.get("NGPU") if mode in ("fake_backend", "local_tensor") else os.environ.get("WORLD_SIZE", "1")
    return int(value) if value is not None and value.strip().isdigit() else None


def check_torchtitan_fields(job_config, world_size: int | None) -> None:
    """The TorchTitan fields motif_titan depends on: types and ranges, refused naming ``section.field``."""
    training, scheduler = job_config.training, job_config.lr_scheduler
    expect_str("model.name", job_config.model.name)
    expect_str("model.flavor", job_config.model.flavor)
    expect_str("model.hf_assets_path", job_config.model.hf_assets_path, "a directory path, or 'embedded'")
    expect_str_list("model.converters", job_config.model.converters)

    expect("training.seq_len", training.seq_len, is_int, ">= 1", lambda v: v >= 1)
    expect("training.local_batch_size", training.local_batch_size, is_int, ">= 1", lambda v: v >= 1)
    expect("training.global_batch_size", training.global_batch_size, is_int,
           "-1 (training.local_batch_size x the data-parallel degree) or >= 1", lambda v: v == -1 or v >= 1)
    expect("training.steps", training.steps, is_int, ">= 1", lambda v: v >= 1)
    expect("training.max_norm", training.max_norm, is_number, "> 0", lambda v: v > 0)
    expect("training.gc_freq", training.gc_freq, is_int, ">= 1", lambda v: v >= 1)
    expect_str("training.dataset", training.dataset)
    expect_str("training.dataset_path", training.dataset_path, "a path, or unset", optional=True)
    expect("training.dataloader.num_workers", training.dataloader.num_workers, is_int, ">= 0", lambda v: v >= 0)


    expect("lr_scheduler.warmup_steps", scheduler.warmup_steps, is_int, ">= 0", lambda v: v >= 0)
    if scheduler.total_steps is not None:
        expect("lr_scheduler.total_steps", scheduler.total_steps, is_int, ">= 1, or unset (training.steps)",
               lambda v: v >= 1)
    if scheduler.decay_ratio is not None:
        expect("lr_scheduler.decay_ratio", scheduler.decay_ratio, is_number, "0 <= decay_ratio <= 1, or unset",
               lambda v: 0 <= v <= 1)
    if scheduler.decay_type not in DECAY_TYPES:
        refuse("lr_scheduler.decay_type", scheduler.decay_type, list(DECAY_TYPES))
    expect("lr_scheduler.min_lr_factor", scheduler.min_lr_factor, is_number, "0 <= min_lr_factor <= 1",
           lambda v: 0 <= v <= 1)

    expect("metrics.log_freq", job_config.metrics.log_freq, is_int, ">= 1", lambda v: v >= 1)
    if job_config.debug.seed is not None:
        expect("debug.seed", job_config.debug.seed, is_int, ">= 0, or unset", lambda v: v >= 0)
    expect_bool("debug.deterministic", job_config.debug.deterministic)
    expect_bool("checkpoint.enable", job_config.checkpoint.enable)
    expect("checkpoint.interval", job_config.checkpoint.interval, is_int, ">= 1", lambda v: v >= 1)
    expect_bool("compile.enable", job_config.compile.enable)

    dp = check_parallel_degrees(job_config.parallelism, world_size)
    if job_config.parallelism.fsdp_reshard_after_forward not in FSDP_RESHARD_POLICIES:
        refuse("parallelism.fsdp_reshard_after_forward", job_config.parallelism.fsdp_reshard_after_forward,
               list(FSDP_RESHARD_POLICIES))
    rows = training.local_batch_size * dp
    if training.global_batch_size > 0 and training.global_batch_size % rows:
        refuse("training.global_batch_size", training.global_batch_size,
               f"-1 or a multiple of training.local_batch_size ({training.local_batch_size}) x the data-parallel "
               f"degree ({dp}) = {rows}")


# -- the entry point ------------------------------------------------------------------------------------------


def validate_job_config(job_config, world_size: int | None) -> None:
    """Every check that needs no data and no model: TorchTitan's fields, then motif_titan's sections, then (for
    ``model.name = "motif2"``) the flavor against the job. Raises ConfigError (a ValueError) or the section's own
    error, naming the field. ``world_size`` None skips the product check of the parallel degrees."""
    import dataclasses

    check_torchtitan_fields(job_config, world_size)
    from motif_titan.optim.builder import check_optimizer_fields, validate_muon_config

    if hasattr(job_config.optimizer, "qk_clip_threshold"):  # motif_titan's [optimizer] fields are merged in
        validate_muon_config(job_config.optimizer)
    else:
        check_optimizer_fields(job_config.optimizer)
    if hasattr(job_config.model, "gda_value_path"):
        from motif_titan.model.args import validate_model_fields

        validate_model_fields(job_config.model)
    curriculum = getattr(job_config, "curriculum", None)
    if curriculum is not None:
        from motif_titan.data.curriculum import validate_curriculum_fields

        validate_curriculum_fields(curriculum)
        if curriculum.domains:
            from motif_titan.data.curriculum_dataloader import build_curriculum_plan

            build_curriculum_plan(curriculum, job_config.training, data_parallel_degree(job_config, world_size))
    guard = getattr(job_config, "guard", None)
    if guard is not None:  # its fields are checked when the section is read (GuardConfig.__post_init__)
        from motif_titan.infra.nonfinite_guard import check_guard_with_parallelism

        check_guard_with_parallelism(guard, job_config.parallelism)
    if job_config.model.name == "motif2":
        from motif_titan.infra.job_rules import check_motif2_job
        from motif_titan.model import motif2_args

        args = dataclasses.replace(motif2_args[job_config.model.flavor])  # a copy: update_from_config sets fields
        args.update_from_config(job_config)
        check_motif2_job(args, job_config, world_size)
