"""TorchTitan 0.3's config functions for motif2, one per TOML file of ``train_configs/`` (installed as
``motif_titan.train_configs``): ``torchrun -m torchtitan.train --module motif_titan --config motif2_debug``.

Each function reads its TOML through ``motif_titan.titan03.toml_config``, so the TOML stays the one description of
the run under both TorchTitan versions. Under TorchTitan 0.2.2 the TOML files are used directly
(``--job.config_file``) and this module is not imported.
"""

from importlib.resources import files

from motif_titan.titan_version import TORCHTITAN_03, TORCHTITAN_VERSION

if not TORCHTITAN_03:
    raise ImportError(f"motif_titan.config_registry is for TorchTitan 0.3 (installed: {TORCHTITAN_VERSION}); under "
                      "0.2.2 run a TOML: --job.config_file train_configs/motif2_debug.toml")

from motif_titan.titan03.toml_config import trainer_config_from_toml  # noqa: E402


def config_file(name: str):
    """The packaged ``train_configs/<name>.toml``."""
    return files("motif_titan.train_configs") / f"{name}.toml"


def _from_toml(name: str):
    def config_function():
        with_path = config_file(name)
        return trainer_config_from_toml(str(with_path))

    config_function.__name__ = config_function.__qualname__ = name.replace(".", "_")
    config_function.__doc__ = f"The run of train_configs/{name}.toml."
    return config_function


CONFIG_FILES = ("motif2_debug", "motif2_debug_curriculum", "motif2_2.6B_pretrain", "motif2_12.7B_pretrain",
                "motif2_12.7B_anneal", "motif2_12.7B_sft1", "motif2_12.7B_sft2", "motif2_12.7B_sft3")
for _name in CONFIG_FILES:
    globals()[_name.replace(".", "_")] = _from_toml(_name)

__all__ = [name.replace(".", "_") for name in CONFIG_FILES] + ["config_file"]
