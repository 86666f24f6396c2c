"""TorchTitan's metrics processor, plus the metrics motif_titan components report (e.g. MuonClip's max logit and
clipped heads from the optimizer container's ``metrics()``, the curriculum's per-domain weights and tokens from the
dataloader's ``metrics(step)``): they go to TensorBoard / W&B with the step's metrics and to the console.
TorchTitan hands the processor its optimizers; the dataloader is handed to it by motif_titan.trainer's
CurriculumTrainer (``processor.dataloader``). For motif2, GDA's lambda over all layers (``gda/lambda_*``) is
reported too: its exponents are shifted to keep it finite, and the metric shows it coming. The first and last
logged steps (step, loss, tokens seen, time) are kept for the run's summary (motif_titan.console.RunReport)."""

import time
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torchtitan.components.metrics import MetricsProcessor
from torchtitan.tools.logging import logger


class LoggedStep(NamedTuple):
    step: int
    loss: float
    tokens: int | None  # TorchTitan's n_tokens_seen: over the data-parallel ranks
    time: float  # time.perf_counter() when it was logged


class ComponentMetricsProcessor(MetricsProcessor):
    dataloader = None
    n_gda_layers = 0  # > 0 for a GDA model (motif2): GDA's lambda metrics are reported
    first_logged: LoggedStep | None = None
    last_logged: LoggedStep | None = None

    def log(self, step: int, global_avg_loss: float, global_max_loss: float, grad_norm: float,
            extra_metrics: dict[str, Any] | None = None):
        component_metrics = {}
        metrics_fn = getattr(self.optimizers, "metrics", None)
        if callable(metrics_fn):
            component_metrics = metrics_fn()
        dataloader_metrics_fn = getattr(self.dataloader, "metrics", None)
        if callable(dataloader_metrics_fn):
            component_metrics = {**component_metrics, **dataloader_metrics_fn(step)}
        component_metrics.update(gda_lambda_metrics(self.model_parts, self.n_gda_layers))
        if component_metrics:
            logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in component_metrics.items()))
        tokens = (extra_metrics or {}).get("n_tokens_seen")
        self.last_logged = LoggedStep(step, float(global_avg_loss), None if tokens is None else int(tokens),
                                      time.perf_counter())
        if self.first_logged is None:
            self.first_logged = self.last_logged
        return super().log(step, global_avg_loss, global_max_loss, grad_norm,
                           extra_metrics={**(extra_metrics or {}), **component_metrics})


def gda_lambda_metrics(model_parts, n_layers: int) -> dict[str, float]:
    """GDA's per-layer lambda over the whole model (``n_layers`` layers; 0: not a GDA model, nothing to report):
    ``gda/lambda_min``, ``gda/lambda_max`` (over layers), ``gda/lambda_max_layer`` (the layer with the largest
    |lambda|) and ``gda/lambda_past_limit`` (exponents past fp32's exp range, shifted to keep lambda finite,
    see motif_titan.model.model.gda_lambda). Pipeline stages hold different layers: each layer's values come from
    the ranks holding it (a MAX all-reduce over all ranks, which every rank calls)."""
    if not n_layers:
        return {}
    lambdas = {}
    for part in model_parts or ():
        lambdas.update(part.gda_lambdas())
    table = torch.full((2, n_layers), float("-inf"))  # rows: lambda, exponents past the limit
    for layer, (lam, past_limit) in lambdas.items():
        table[0, layer], table[1, layer] = float(lam), float(past_limit)
    if dist.is_initialized() and dist.get_world_size() > 1:
        device = torch.accelerator.current_accelerator() or torch.device("cpu")
        reduced = table.to(device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        table = reduced.cpu()
    lam = table[0]
    return {"gda/lambda_min": float(lam.min()), "gda/lambda_max": float(lam.max()),
            "gda/lambda_max_layer": int(lam.abs().argmax()), "gda/lambda_past_limit": int(table[1].sum())}


def gda_layer_count(model_args) -> int:
    """The layers whose GDA lambda the processor reports: all of a GDA model's (motif2's args), none otherwise."""
    return model_args.n_layers if hasattr(model_args, "n_noise_heads") else 0


def build_metrics_processor(job_config, parallel_dims, model_args=None, tag: str | None = None) -> MetricsProcessor:
    """The TrainSpec's ``build_metrics_processor_fn``."""
    processor = ComponentMetricsProcessor(job_config, parallel_dims, tag)
    processor.n_gda_layers = gda_layer_count(model_args)
    return processor
