"""TorchTitan 0.3's Trainer, plus what motif_titan's components need of the training loop (as
``motif_titan.trainer.CurriculumTrainer`` does on 0.2.2):

* Batch-size ramp: before each step, ``gradient_accumulation_steps`` is the curriculum dataloader's
  ``micro_batches_per_step(step)``; 0.3's ``train_step`` then draws that many micro-batches and divides the summed
  loss by their global count of valid labels.
* Flex attention masks: 0.3 builds masks only for its own ``Decoder`` models; a model with
  ``get_attention_masks`` (motif2's flex flavors) gets its causal / document masks here, from the batch and the
  tokenizer's EOS.
* Metrics: the processor (``ComponentMetrics``) logs the optimizer's and the dataloader's metrics with the step's.
* Checks 0.2.2's job rules make that 0.3's config has no place for: packed SFT rows need a model that blocks
  attention at EOS; a sequence-length ramp cannot run under pipeline parallelism.
* Console: the progress line, ``train.log``, ``job_config.json`` / ``model_args.json`` and the end-of-run summary
  (``motif_titan.console.RunReport``).
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
from motif_titan.data.curriculum_dataloader import check_sft_masks
from motif_titan.metrics import ComponentMetricsProcessor
from motif_titan.model import Motif2ModelArgs
from motif_titan.model.hf_config import write_model_args


class ComponentMetrics(ComponentMetricsProcessor):
    """``motif_titan.metrics.ComponentMetricsProcessor`` as 0.3 builds it (``Trainer.Config.metrics``)."""

    @dataclass(kw_only=True, slots=True)
    class Config(MetricsProcessor.Config):
        pass


class MotifTrainer(Trainer):
    @dataclass(kw_only=True, slots=True)
    class Config(Trainer.Config):
        metrics: MetricsProcessor.Config = field(default_factory=ComponentMetrics.Config)

        def __post_init__(self):
            Trainer.Config.__post_init__(self)
            check_curriculum_fits(self)

    def __init__(self, config: Config):
        # the console's progress lines, train.log, job_config.json and model_args.json, and the summary, as on 0.2.2
        self.report = RunReport(_report_view(config), logger)
        super().__init__(config)
        self._micro_batches_per_step = getattr(self.dataloader, "micro_batches_per_step", None)
        if self._micro_batches_per_step is not None:
            self.dataloader.trainer_drives_batch_ramp = True
        self.metrics_processor.dataloader = self.dataloader
        args = getattr(self.model_config, "args", None)
        self.model_args = args
        self.metrics_processor.n_gda_layers = args.n_layers if hasattr(args, "n_noise_heads") else 0
        self._builds_masks = getattr(args, "attn_type", None) == "flex"
        if isinstance(args, Motif2ModelArgs) and getattr(self.checkpointer, "enable", False):
            self.checkpointer.dcp_save = _describing_step_folders(self.checkpointer.dcp_save, args)
        self.report.trainer_built(self)

    def train(self):
        self.report.train_started()
        super().train()
        self.report.summary(self)

    def train_step(self, data_iterator):
        if self._micro_batches_per_step is not None:
            self.gradient_accumulation_steps = self._micro_batches_per_step(self.step)
        result = super().train_step(data_iterator)
        self.report.after_step(self.step, self.metrics_processor.should_log(self.step))
        return result

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
    curriculum = getattr(config.dataloader, "curriculum", None)
    if curriculum is None or not curriculum.domains:
        return
    pp = config.parallelism.pipeline_parallel_degree
    if curriculum.seq_len_ramp_start and pp > 1:
        raise ValueError(
            f"curriculum.seq_len_ramp_start = {curriculum.seq_len_ramp_start} with "
            f"parallelism.pipeline_parallel_degree = {pp}: pipeline stages infer their activation shapes once, at "
            f"the first step, and a new row length then fails in the first backward; allowed with pipeline "
            f"parallelism: curriculum.seq_len_ramp_start = 0 (off)")
    spec = config.model_spec
    if curriculum.mode == "sft" and spec is not None:
        check_sft_masks(getattr(spec.model, "args", spec.model), spec.name, spec.flavor)
