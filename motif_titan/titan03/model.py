"""The Motif-2 model as a TorchTitan 0.3 ``BaseModel``: the same module tree, parameters and forward as under 0.2.2
(``motif_titan.model.Motif2Model``), built from a ``Config`` that holds one flavor's ``Motif2ModelArgs``.

0.3's own models are trees of ``Module.Config`` nodes whose tensor-parallel layouts are declared on the nodes;
Motif-2 keeps its torch modules and its imperative parallel plans (``motif_titan.infra.parallel_plans``), which
run on 0.3's ``partial_dtensor`` SPMD backend (see ``motif_titan.titan03.parallelize``).
"""

from dataclasses import dataclass, field
from types import SimpleNamespace

from torch import nn
from torchtitan.protocols.model import BaseModel

from motif_titan.model import (
    FROM_CHECKPOINT,
    Motif2Model,
    Motif2ModelArgs,
    checkpoint_shapes,
    first_load_folder,
    model_args_record,
    motif2_args,
)


def check_job(args: Motif2ModelArgs, flavor: str, config) -> None:
    """0.2.2's job rules for motif2 (``motif_titan.infra.job_rules``: the checkpoint loaded first has the flavor's
    shapes; tensor parallelism keeps whole GDA groups; pipeline stages do not split a tied embedding and name
    motif2's modules; no experts; no DDP without sharding) on the same fields of 0.3's Trainer.Config."""
    from motif_titan.infra import job_rules
    from motif_titan.validate import launched_world_size

    job = SimpleNamespace(parallelism=config.parallelism, training=config.training, checkpoint=config.checkpoint,
                          comm=config.comm, model=SimpleNamespace(flavor=flavor, hf_assets_path=config.hf_assets_path))
    job_rules.check_initial_load(args, job)
    job_rules.check_tensor_parallel(args, job)
    job_rules.check_pipeline_parallel(args, job)
    job_rules.check_expert_parallel(job)
    job_rules.check_data_parallel(job, launched_world_size(job))


class Motif2Titan03(Motif2Model, BaseModel):
    """``Motif2Model`` under 0.3's model protocol. Its submodules are torch modules, not 0.3 ``Module`` configs
    (which is what ``verify_module_protocol`` checks), and its init is Motif's (``Motif2Model.init_weights``)."""

    @dataclass(kw_only=True, slots=True)
    class Config(BaseModel.Config):
        flavor: str = "debugmodel"
        args: Motif2ModelArgs = field(default_factory=lambda: motif2_args["debugmodel"])
        gda_value_path: str | None = None
        """``[model] gda_value_path`` of the TOML: unset keeps the flavor's."""
        float8: object = None
        """FP8 settings (``motif_titan.titan03.float8.Motif2Float8.Config``), set by that converter."""

        def update_from_config(self, *, config, **kwargs) -> None:
            """The job's sequence length, GDA value path and context parallelism, checked and taken as on 0.2.2
            (``Motif2ModelArgs.take_run``); ``from_checkpoint`` first reads the shapes of the checkpoint the job
            loads (``checkpoint.initial_load_path``, or ``hf_assets_path`` with ``checkpoint.initial_load_in_hf``)."""
            if self.flavor == FROM_CHECKPOINT:
                folder = first_load_folder(config.checkpoint, config.hf_assets_path, "hf_assets_path")
                self.args = Motif2ModelArgs(**model_args_record(checkpoint_shapes(*folder)))
            self.args.take_run(seq_len=config.training.seq_len, flavor=self.flavor, value_path=self.gda_value_path,
                               context_parallel_degree=config.parallelism.context_parallel_degree)
            check_job(self.args, self.flavor, config)

        def get_nparams_and_flops(self, model: nn.Module, seq_len: int) -> tuple[int, int]:
            return self.args.get_nparams_and_flops(model, seq_len)

    def __init__(self, config: Config) -> None:
        super().__init__(config.args)
        if config.float8 is not None:
            from .float8 import convert_to_float8

            convert_to_float8(self, config.float8)

    def verify_module_protocol(self) -> None:
        """Nothing to verify: the tree is torch modules by design (see the class docstring)."""
