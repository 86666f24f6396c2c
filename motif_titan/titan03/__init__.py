"""motif_titan under TorchTitan 0.3.x: motif2's ``ModelSpec`` (``model_registry``), its parallelize function, and the
components 0.3's trainer builds from its config (``Muon`` optimizers, the curriculum dataloader, FP8), plus
``motif_titan.config_registry``'s config functions and the reader of this project's TOML layout
(``motif_titan.titan03.toml_config``). Imported by ``import motif_titan`` when TorchTitan 0.3 is installed.
"""

import copy

from torchtitan.protocols.model_spec import ModelSpec

from motif_titan.model import FROM_CHECKPOINT, Motif2StateDictAdapter, motif2_args

from .model import Motif2Titan03
from .optimizer import attach_max_logits
from .parallelize import parallelize_motif2, pipeline_motif2

MODEL_NAME = "motif2"


def model_registry(flavor: str, converters: list | None = None) -> ModelSpec:
    """motif2's ModelSpec for ``flavor`` (a name of ``motif_titan.model.motif2_args`` or ``"from_checkpoint"``);
    an unknown name is refused naming ``model.flavor`` and the choices. ``converters``: 0.3 config converters
    (``motif_titan.titan03.float8.Motif2Float8.Config`` for FP8 linears), applied in order as 0.3's models do."""
    args = copy.deepcopy(motif2_args[flavor])  # the flavor table stays untouched by the job's settings
    model = Motif2Titan03.Config(flavor=flavor, args=args)
    for converter in converters or ():
        model = converter.build().convert(model)
    return ModelSpec(
        name=MODEL_NAME,
        flavor=flavor,
        model=model,
        parallelize_fn=parallelize_motif2,
        pipelining_fn=pipeline_motif2,
        post_optimizer_build_fn=attach_max_logits,  # MuonClip's recorder on the built layout
        state_dict_adapter=Motif2StateDictAdapter,
    )


__all__ = ["FROM_CHECKPOINT", "MODEL_NAME", "Motif2Titan03", "model_registry", "parallelize_motif2",
           "pipeline_motif2"]
