"""motif_titan: the Motif-2-12.7B training system as TorchTitan components, for TorchTitan 0.2.2 and 0.3.x.

``import motif_titan`` plugs the model into the installed TorchTitan and does nothing else:
- TorchTitan 0.2.2 (``[experimental] custom_import = "motif_titan"``): registers the TrainSpec ``motif2``
  (``motif_titan.train_spec``).
- TorchTitan 0.3.x (``--module motif_titan --config motif2_debug``): exposes ``model_registry(flavor)`` and, through
  ``motif_titan.config_registry``, one config function per TOML in ``train_configs/`` (``motif_titan.titan03``).
"""

from motif_titan.titan_version import TORCHTITAN_03, TORCHTITAN_VERSION

if TORCHTITAN_03:
    from motif_titan.titan03 import model_registry  # noqa: F401

    __all__ = ["TORCHTITAN_VERSION", "model_registry"]
else:
    from motif_titan.train_spec import TRAIN_SPEC_NAME, get_train_spec, motif2_args

    __all__ = ["TORCHTITAN_VERSION", "TRAIN_SPEC_NAME", "get_train_spec", "motif2_args"]
