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
"""

from dataclasses import dataclass, field

from torchtitan.components.metrics import MetricsProcessor
from torchtitan.trainer import Trainer

from motif_titan.data.curriculum_dataloader import check_sft_masks
from motif_titan.metrics import ComponentMetricsProcessor


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
        super().__init__(config)
        self._micro_batches_per_step = getattr(self.dataloader, "micro_batches_per_step", None)
        if self._micro_batches_per_step is not None:
            self.dataloader.trainer_drives_batch_ramp = True
        self.metrics_processor.dataloader = self.dataloader
        args = getattr(self.model_config, "args", None)
        self.metrics_processor.n_gda_layers = args.n_layers if hasattr(args, "n_noise_heads") else 0
        self._builds_masks = getattr(args, "attn_type", None) == "flex"

    def train_step(self, data_iterator):
        if self._micro_batches_per_step is not None:
            self.gradient_accumulation_steps = self._micro_batches_per_step(self.step)
        return super().train_step(data_iterator)

    def post_dataloading_process(self, input_dict, labels):
        inputs, labels, extra_kwargs = super().post_dataloading_process(input_dict, labels)
        if self._builds_masks and "attention_masks" not in extra_kwargs:
            extra_kwargs["attention_masks"] = self.model_parts[0].get_attention_masks(inputs, self.tokenizer)
        return inputs, labels, extra_kwargs


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
