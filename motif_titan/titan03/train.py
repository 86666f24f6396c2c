"""``python -m motif_titan.train --job.config_file X.toml [--section.key value ...]`` under TorchTitan 0.3: the TOML
read into a ``Trainer.Config`` (``toml_config``), then 0.3's own main loop (``torchtitan.train.main``'s steps:
build the trainer from the config, train, close, destroy the process group)."""

import ast
import os

import torch
from torchtitan.tools.logging import init_logger, logger

from .toml_config import TomlConfigError, trainer_config_from_toml


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_command_line(argv: list[str]) -> tuple[str, dict]:
    """(config file, {"section.key": value}) of ``--job.config_file F --section.key value ...``, read as 0.2.2's
    command line is: a flag without a value is true, several values are a list."""
    config_file, overrides, i = None, {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise TomlConfigError(f"unexpected argument {arg!r}; expected --job.config_file FILE and "
                                  "--section.key value pairs")
        key, eq, inline = arg[2:].partition("=")
        values = [inline] if eq else []
        while not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            values.append(argv[i + 1])
            i += 1
        if key == "job.config_file":
            if len(values) != 1:
                raise TomlConfigError("--job.config_file takes one FILE")
            config_file = values[0]
        elif not values:
            overrides[key] = True
        else:
            overrides[key] = _value(values[0]) if len(values) == 1 else [_value(v) for v in values]
        i += 1
    if config_file is None:
        raise TomlConfigError("--job.config_file FILE is required")
    return config_file, overrides


def main(argv: list[str]) -> None:
    init_logger()
    config_file, overrides = parse_command_line(argv)
    config = trainer_config_from_toml(config_file, overrides)
    trainer = None
    try:
        trainer = config.build()
        if config.checkpoint.create_seed_checkpoint:
            if int(os.environ.get("WORLD_SIZE", "1")) != 1:
                raise ValueError("checkpoint.create_seed_checkpoint runs on one process (the seed is unsharded)")
            if not config.checkpoint.enable:
                raise ValueError("checkpoint.create_seed_checkpoint needs checkpoint.enable = true")
            trainer.checkpointer.save(curr_step=0, last_step=True)
            logger.info("Created seed checkpoint")
        else:
            trainer.train()
    finally:
        if trainer is not None:
            trainer.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            logger.info("Process group destroyed")
