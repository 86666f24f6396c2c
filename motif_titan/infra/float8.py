"""FP8 row-wise training settings for any TorchTitan model, through TorchTitan's float8 converter (torchao).

The report trains with "row-wise scaling, BF16 gradients": torchao's ``rowwise_with_gw_hp`` recipe (row-wise scaled
FP8 for the forward and grad-input GEMMs, the grad-weight GEMM in high precision); ``rowwise`` puts that GEMM in FP8
too. FP8 pays only on GEMMs large enough that the extra casts and scaling passes are hidden, and the output head
stays in BF16 (the logits are where precision matters most). TOML:

    [model]
    converters = ["quantize.linear.float8_auto_filter"]   # or TorchTitan's own "quantize.linear.float8"
    [quantize.linear.float8]
    recipe_name = "rowwise_with_gw_hp"                    # or "rowwise"
    filter_fqns = ["output"]                              # substrings of module names kept in BF16

``quantize.linear.float8_auto_filter`` is TorchTitan's converter with one more rule: a linear whose weight (N out x
K in) is below torchao's published H100 row-wise thresholds (N <= 2048, or K <= 1024, or N <= 4096 and K <= 2048)
stays in BF16, as torchao's own auto filter does for "rowwise" (it has none for "rowwise_with_gw_hp"). In the
12.7B flavor that keeps wk and wv (2048 x 4096) in BF16 and converts wq, wo, w1, w2, w3. Registering it is the only
thing importing this module does.
"""

from torch import nn
from torchtitan.components.quantization.float8 import Float8LinearConverter
from torchtitan.protocols.model_converter import register_model_converter

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


class Float8AutoFilterConverter(Float8LinearConverter):
    """TorchTitan's ``Float8LinearConverter`` (``[quantize.linear.float8]``: recipe, filter_fqns, emulate) that also
    keeps linears too small for row-wise FP8 in BF16. A motif2 job's recipe is checked before anything is built
    (``motif_titan.infra.job_rules.check_converters``); other TorchTitan models get the same check here."""

    def __init__(self, job_config, parallel_dims):
        check_auto_filter_recipe(job_config.quantize.linear.float8.recipe_name)
        super().__init__(job_config, parallel_dims)
        by_name = self.filter_fn
        self.filter_fn = lambda module, fqn: by_name(module, fqn) and large_enough_for_rowwise_fp8(module)


register_model_converter(Float8AutoFilterConverter, FLOAT8_AUTO_FILTER_CONVERTER)
