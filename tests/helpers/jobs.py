"""A JobConfig as TorchTitan's ConfigManager parses it from the command line."""

from torchtitan.config import ConfigManager


def parse_debug_job(*cli: str):
    """The job of ``--model.name motif2 --model.flavor debugmodel`` plus ``cli``."""
    return ConfigManager().parse_args(["--model.name", "motif2", "--model.flavor", "debugmodel", *cli])
