"""FP8 linears for motif2 under TorchTitan 0.3, through 0.3's config converters: ``model_registry(flavor,
converters=[Motif2Float8.Config(...)])`` (the TOML's ``[model] converters`` and ``[quantize.linear.float8]``).

0.3's own ``Float8LinearConverter`` swaps ``Linear.Config`` nodes of a model config tree; motif2's config holds
torch modules, not such nodes, so this converter records the FP8 settings on motif2's config instead and the model
converts its linears with torchao right after it is built (on the meta device, before any parallelism), which is
where 0.2.2's converter does it. Which linears convert, and the recipe checks, are 0.2.2's
(``motif_titan.infra.float8_rules``).
"""

import dataclasses
from dataclasses import dataclass, field

from torch import nn
from torchtitan.protocols.model import ModelConfigConverter
from torchtitan.tools.logging import logger
from torchtitan.tools.utils import has_cuda_capability

from motif_titan.infra.float8_rules import check_auto_filter_recipe, fp8_module_filter

RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")


class Motif2Float8(ModelConfigConverter):
    @dataclass(kw_only=True, slots=True)
    class Config(ModelConfigConverter.Config):
        recipe_name: str | None = None
        """torchao's recipe: None (tensor-wise scaling), "rowwise" or "rowwise_with_gw_hp"."""
        filter_fqns: list[str] = field(default_factory=list)
        """Substrings of the names of linears kept in high precision."""
        emulate: bool = False
        """torchao's emulation (fp32 math standing in for FP8 GEMMs): for CPUs and older GPUs, tests only."""
        auto_filter: bool = False
        """``quantize.linear.float8_auto_filter``: also keep linears too small for row-wise FP8 in high precision."""

    def __init__(self, config: Config):
        if config.recipe_name not in (None, *RECIPES):
            raise ValueError(f"quantize.linear.float8.recipe_name = {config.recipe_name!r}; allowed: None, "
                             f"{list(RECIPES)}")
        if config.auto_filter:
            check_auto_filter_recipe(config.recipe_name)
        self.config = config

    def convert(self, model_config):
        model_config.float8 = self.config
        return model_config


def convert_to_float8(model: nn.Module, settings: Motif2Float8.Config) -> None:
    """Swap the model's linears that ``settings`` select for torchao's Float8Linear, in place (when the model is
    built: a config naming FP8 can be read and inspected on any machine)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    if not (settings.emulate or has_cuda_capability(8, 9)):
        raise ValueError("model.converters: FP8 linears need an NVIDIA GPU of SM 8.9 or later; allowed here: "
                         "quantize.linear.float8.emulate = true (torchao's emulation, for tests)")
    if settings.recipe_name is None or settings.recipe_name == "tensorwise":
        config = Float8LinearConfig(emulate=settings.emulate)
    else:
        config = Float8LinearConfig.from_recipe_name(settings.recipe_name)
        if settings.emulate:
            config = dataclasses.replace(config, emulate=True)
    convert_to_float8_training(model, config=config,
                               module_filter_fn=fp8_module_filter(list(settings.filter_fqns), settings.auto_filter))
    logger.info(f"Swapped to Float8Linear layers ({settings.recipe_name or 'tensorwise'} scaling)")
