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

from torchtitan.components.quantization.float8 import Float8LinearConverter
from torchtitan.protocols.model_converter import register_model_converter

from .float8_rules import (  # noqa: F401  (the rules' names, where the 0.2.2 converter's users look for them)
    FLOAT8_AUTO_FILTER_CONVERTER,
    FLOAT8_CONVERTER,
    FLOAT8_CONVERTERS,
    ROWWISE_RECIPES,
    check_auto_filter_recipe,
    large_enough_for_rowwise_fp8,
)


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
