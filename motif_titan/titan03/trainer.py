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
* Pipeline steps on torch 2.13: 0.3.0 hands its pipeline schedule the step's micro-batches already split
  (``step(arg_mbs=..., kwarg_mbs=..., target_mbs=...)``), an API of a later torch; torch 2.13's schedules take the
  whole batch and split it themselves. Under such a torch the step's micro-batches are joined into that batch, in
  order, and the schedule splits it back into the same micro-batches (as 0.2.2's trainer runs it), with 0.3's loss
  normalization (``loss_kwargs``: the global count of valid labels).
* Checkpoints: 0.3's DCP checkpointer with motif_titan's integrity checks (``motif_titan.titan03.checkpoint``:
  manifests, verified loads, fallback to the newest intact step, continuable model-only last saves, complete HF last
  saves); step folders of a motif2 run carry ``model_args.json`` (what the export and ``from_checkpoint`` read).
"""

import inspect
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch.distributed.pipelining.schedules import _PipelineSchedule
from torchtitan.components.metrics import MetricsProcessor
from torchtitan.tools.logging import logger
from torchtitan.trainer import Trainer

from motif_titan.console import RunReport
from motif_titan.data.curriculum_dataloader import check_seq_len_ramp_fits_pipeline, check_sft_masks
from motif_titan.infra.nonfinite_guard import GuardConfig
from motif_titan.loop import ComponentLoop
from motif_titan.metrics import ComponentMetricsProcessor, gda_layer_count

from . import MODEL_NAME
from .checkpoint import integrity_config
from .parallelize import check_parallelism


SCHEDULES_TAKE_MICRO_BATCHES = "arg_mbs" in inspect.signature(_PipelineSchedule.step).parameters
"""Whether this torch's pipeline schedules take split micro-batches (the call TorchTitan 0.3.0 makes)."""


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
                check_parallelism(self.parallelism)  # before anything is built
            self.checkpoint = integrity_config(self.checkpoint)
            Trainer.Config.__post_init__(self)
            check_curriculum_fits(self)

    def __init__(self, config: Config):
        # the console's progress lines, train.log, job_config.json and model_args.json, and the summary, as on 0.2.2
        self.report = RunReport(_report_view(config), logger)
        parallelism = config.parallelism
        if parallelism.pipeline_parallel_degree > 1 and hasattr(config.dataloader, "pipeline_micro_batches"):
            config.dataloader.pipeline_micro_batches = (config.training.local_batch_size
                                                        // parallelism.pipeline_parallel_microbatch_size)
        super().__init__(config)
        self.wire_components(config.guard)
        args = getattr(self.model_config, "args", None)
        self.model_args = args
        self.metrics_processor.n_gda_layers = gda_layer_count(args)
        self._builds_masks = getattr(args, "attn_type", None) == "flex"
        self.checkpointer.describe(args, config.hf_assets_path)
        self.report.trainer_built(self)

    def post_dataloading_process(self, input_dict, labels):
        inputs, labels, extra_kwargs = super().post_dataloading_process(input_dict, labels)
        if self._builds_masks and "attention_masks" not in extra_kwargs:
            extra_kwargs["attention_masks"] = self.model_parts[0].get_attention_masks(inputs, self.tokenizer)
        return inputs, labels, extra_kwargs

    def pp_forward_backward_step(self, *, input_dict_mbs, label_mbs, global_valid_tokens):
        if SCHEDULES_TAKE_MICRO_BATCHES:
            return super().pp_forward_backward_step(input_dict_mbs=input_dict_mbs, label_mbs=label_mbs,
                                                    global_valid_tokens=global_valid_tokens)
        # torch 2.13: one whole batch, which the schedule splits into these micro-batches again (see the module
        # docstring); masks are built once for it and split with it
        batch = {key: torch.cat([mb[key] for mb in input_dict_mbs]) for key in input_dict_mbs[0]}
        inputs, labels, extra_kwargs = self.post_dataloading_process(batch, torch.cat(label_mbs))
        losses = [] if self.pp_has_last_stage else None
        with self.train_context():
            self.pp_schedule.step(*((inputs,) if self.pp_has_first_stage else ()), **extra_kwargs,
                                  target=labels if self.pp_has_last_stage else None, losses=losses,
                                  return_outputs=False, loss_kwargs={"global_valid_tokens": global_valid_tokens})
        if self.pp_has_last_stage:
            return torch.sum(torch.stack(losses)).to(self.device)
        return torch.tensor([-1.0], device=self.device)


def _report_view(config):
    """What ``motif_titan.console.RunReport`` reads of a 0.2.2 JobConfig, from a 0.3 Trainer.Config."""
    return SimpleNamespace(job=SimpleNamespace(dump_folder=config.dump_folder), training=config.training,
                           parallelism=config.parallelism, comm=config.comm, metrics=config.metrics,
                           checkpoint=config.checkpoint, to_dict=config.to_dict)


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
