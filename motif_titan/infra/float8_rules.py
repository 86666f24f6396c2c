"""Which linears of a model train in FP8 and with which recipes: the rules both TorchTitan versions' FP8 paths share
(0.2.2: ``motif_titan.infra.float8``'s converter; 0.3: ``motif_titan.titan03.float8``). See ``infra/float8.py`` for
the TOML and the thresholds' source.
"""

from torch import nn

FLOAT8_CONVERTER = "quantize.linear.float8"
FLOAT8_AUTO_FILTER_CONVERTER = "quantize.linear.float8_auto_filter"
FLOAT8_CONVERTERS = (FLOAT8_CONVERTER, FLOAT8_AUTO_FILTER_CONVERTER)  # the converters motif2 takes
ROWWISE_RECIPES = ("rowwise_with_gw_hp", "rowwise")


def large_enough_for_rowwise_fp8(linear: nn.Linear) -> bool:
    """torchao's H100 row-wise thresholds (float8 README, "rowwise scaling" table): below them FP8 is slower."""
    n, k = linear.weight.shape
    return not (n <= 2048 or k <= 1024 or (n <= 4096 and k <= 2048))


def check_auto_filter_recipe(recipe: str | None) -> None:
    """The auto filter's thresholds are torchao's row-wise ones: other recipes are refused."""
    if recipe not in ROWWISE_RECIPES:
        raise ValueError(f"quantize.linear.float8.recipe_name = {recipe!r}; allowed with "
                         f"{FLOAT8_AUTO_FILTER_CONVERTER!r}: {list(ROWWISE_RECIPES)}")


def fp8_module_filter(filter_fqns: list[str], auto_filter: bool):
    """torchao's ``module_filter_fn`` for ``convert_to_float8_training``: a linear whose dims are multiples of 16 (the
    FP8 GEMMs need them) and whose name contains none of ``filter_fqns``; with ``auto_filter``, also large enough
    for row-wise FP8 (``large_enough_for_rowwise_fp8``). TorchTitan 0.2.2's converter filters the same way."""

    def keep(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear):
            return False
        n, k = module.weight.shape
        if n % 16 or k % 16 or any(f in fqn for f in filter_fqns):
            return False
        return not auto_filter or large_enough_for_rowwise_fp8(module)

    return keep


def check_motif2_converters(converters: list[str], filter_fqns: list[str], recipe_name: str | None, tied: bool,
                            flavor: str) -> None:
    """Only FP8 linears, with a recipe the auto filter has thresholds for; a tied output head stays in BF16 (its
    matrix is the embedding). Raised naming the TOML fields."""
    unsupported = [c for c in converters if c not in FLOAT8_CONVERTERS]
    if unsupported:
        raise NotImplementedError(
            f"model.converters = {converters}: motif2 does not support {unsupported}; allowed: any of "
            f"{list(FLOAT8_CONVERTERS)} (FP8 linears), or []"
        )
    if converters and tied and not any(f in "output" for f in filter_fqns if f):
        raise ValueError(
            f"quantize.linear.float8.filter_fqns = {list(filter_fqns)}: motif2 flavor '{flavor}' ties "
            f"the output head to the embedding, which must stay in BF16; add 'output'"
        )
    if FLOAT8_AUTO_FILTER_CONVERTER in converters:
        check_auto_filter_recipe(recipe_name)
