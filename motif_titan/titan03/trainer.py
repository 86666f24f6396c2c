"""TorchTitan 0.3's Trainer, plus what motif_titan's components need of the training loop (as
``motif_titan.trainer.CurriculumTrainer`` does on 0.2.2):

* Batch-size ramp, dataloader metrics, the non-finite guard (``guard``), the console's progress lines and summary:
  ``motif_titan.loop.ComponentLoop`` (shared with 0.2.2's trainer).
* Flex attention masks: 0.3 builds masks only for its own ``Decoder`` models; a model with
  ``get_attention_masks`` (motif2's flex flavors) gets its causal / document masks here, from the batch and the
  tokenizer's EOS.
* Metrics: the processor (``ComponentMetrics``) logs the optimizer's and the dataloader's metrics with the step's.
* Checks 0.2.2's job rules make that 0.3's config has no place for: packed SFT rows need a model that blocks
  attention at EOS; a sequence-length ramp cannot run under pipeline parallelism.
* Console: ``train.log``, ``job_config.json`` / ``model_args.json`` (``motif_titan.console.RunReport``).
* Step folders of a motif2 run carry ``model_args.json`` (what the export and ``from_checkpoint`` read).
"""

import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch.distributed as dist
from torchtitan.components.metrics import MetricsProcessor
from torchtitan.tools.logging import logger
from torchtitan.trainer import Trainer

from motif_titan.console import RunReport
from motif_titan.data.curriculum_dataloader import check_seq_len_ramp_fits_pipeline, check_sft_masks
from motif_titan.infra.nonfinite_guard import GuardConfig
from motif_titan.loop import ComponentLoop
from motif_titan.metrics import ComponentMetricsProcessor, gda_layer_count
from motif_titan.model import Motif2ModelArgs
from motif_titan.model.hf_config import write_model_args

from . import MODEL_NAME
from .parallelize import check_parallelism


class ComponentMetrics(ComponentMetricsProcessor):
    """``motif_titan.metrics.ComponentMetricsProcessor`` as 0.3 builds it (``Trainer.Config.metrics``)."""

    @dataclass(kw_only=True, slots=True)
    class Config(MetricsProcessor.Config):
        pass


class MotifTrainer(ComponentLoop, Trainer):
    """0.3's Trainer with what motif_titan's components need of the loop (see the module docstring)."""

    @dataclass(kw_only=True, slots=True)
    class Config(Trainer.Config):
        metrics: MetricsProcessor.Config = field(default_factory=ComponentMetrics.Config)
        guard: GuardConfig = field(default_factory=GuardConfig)
        """``[guard]``: what a step with a non-finite loss or gradient norm does (motif_titan.infra.nonfinite_guard)."""

        def __post_init__(self):
            if self.model_spec is not None and self.model_spec.name == MODEL_NAME:
                check_parallelism(self.parallelism)  # before anything is built (0.3 pipelines before parallelizing)
            Trainer.Config.__post_init__(self)
            check_curriculum_fits(self)

    def __init__(self, config: Config):
        # the console's progress lines, train.log, job_config.json and model_args.json, and the summary, as on 0.2.2
        self.report = RunReport(_report_view(config), logger)
        super().__init__(config)
        self.wire_components(config.guard)
        args = getattr(self.model_config, "args", None)
        self.model_args = args
        self.metrics_processor.n_gda_layers = gda_layer_count(args)
        self._builds_masks = getattr(args, "attn_type", None) == "flex"
        if isinstance(args, Motif2ModelArgs) and getattr(self.checkpointer, "enable", False):
            self.checkpointer.dcp_save = _describing_step_folders(self.checkpointer.dcp_save, args)
        self.report.trainer_built(self)

    def post_dataloading_process(self, input_dict, labels):
        inputs, labels, extra_kwargs = super().post_dataloading_process(input_dict, labels)
        if self._builds_masks and "attention_masks" not in extra_kwargs:
            extra_kwargs["attention_masks"] = self.model_parts[0].get_attention_masks(inputs, self.tokenizer)
        return inputs, labels, extra_kwargs


def _report_view(config):
    """What ``motif_titan.console.RunReport`` reads of a 0.2.2 JobConfig, from a 0.3 Trainer.Config."""
    return SimpleNamespace(job=SimpleNamespace(dump_folder=config.dump_folder), training=config.training,
                           parallelism=config.parallelism, comm=config.comm, metrics=config.metrics,
                           checkpoint=config.checkpoint, to_dict=config.to_dict)


def _describing_step_folders(dcp_save, args):
    """0.3's checkpointer's ``dcp_save``, writing the step folder's ``model_args.json`` first (rank 0), as 0.2.2's
    ``IntegrityCheckpointManager`` does: ``python -m motif_titan.export`` and ``flavor = "from_checkpoint"`` read the
    model's shapes from it. An HF save describes its model in ``config.json`` instead."""

    def save(state_dict, checkpoint_id, async_mode, enable_garbage_collection=False, to_hf=False):
        if not to_hf and (not dist.is_initialized() or dist.get_rank() == 0):
            os.makedirs(checkpoint_id, exist_ok=True)
            write_model_args(checkpoint_id, args)
        return dcp_save(state_dict, checkpoint_id, async_mode, enable_garbage_collection, to_hf)

    return save


def check_curriculum_fits(config) -> None:
    """The curriculum's rules that involve the rest of the 0.3 config (0.2.2 checks them in the dataloader builder,
    which sees the whole JobConfig)."""
    curriculum = getattr(config.dataloader, "curriculum", None)
    if curriculum is None or not curriculum.domains:
        return
    check_seq_len_ramp_fits_pipeline(curriculum, config.parallelism.pipeline_parallel_degree)
    spec = config.model_spec
    if curriculum.mode == "sft" and spec is not None:
        check_sft_masks(getattr(spec.model, "args", spec.model), spec.name, spec.flavor)
