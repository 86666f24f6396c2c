"""TorchTitan's metrics processor, plus the metrics motif_titan components report (e.g. MuonClip's max logit and
clipped heads from the optimizer container's ``metrics()``, the curriculum's per-domain weights and tokens from the
dataloader's ``metrics(step)``): they go to TensorBoard / W&B with the step's metrics and to the console.
TorchTitan hands the processor its optimizers; the dataloader is handed to it by motif_titan.trainer's
CurriculumTrainer (``processor.dataloader``)."""

from typing import Any

from torchtitan.components.metrics import MetricsProcessor
from torchtitan.tools.logging import logger


class ComponentMetricsProcessor(MetricsProcessor):
    dataloader = None

    def log(self, step: int, global_avg_loss: float, global_max_loss: float, grad_norm: float,
            extra_metrics: dict[str, Any] | None = None):
        component_metrics = {}
        metrics_fn = getattr(self.optimizers, "metrics", None)
        if callable(metrics_fn):
            component_metrics = metrics_fn()
        dataloader_metrics_fn = getattr(self.dataloader, "metrics", None)
        if callable(dataloader_metrics_fn):
            component_metrics = {**component_metrics, **dataloader_metrics_fn(step)}
        if component_metrics:
            logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in component_metrics.items()))
        return super().log(step, global_avg_loss, global_max_loss, grad_norm,
                           extra_metrics={**(extra_metrics or {}), **component_metrics})


def build_metrics_processor(job_config, parallel_dims, model_args=None, tag: str | None = None) -> MetricsProcessor:
    """The TrainSpec's ``build_metrics_processor_fn``."""
    return ComponentMetricsProcessor(job_config, parallel_dims, tag)
