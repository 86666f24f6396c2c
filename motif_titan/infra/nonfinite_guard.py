"""Non-finite guard: a step whose loss or gradient norm is NaN or infinite never reaches the optimizer.

TOML (``[guard]``, registered in motif_titan.job_config)::

    [guard]
    on_nonfinite = "stop"        # "stop" (default) or "skip"
    max_consecutive_skips = 3    # with "skip": this many consecutive steps are skipped, the next one stops the run

The check runs after the last micro-batch's backward of every step, before TorchTitan clips the gradients and
steps the optimizers: the step's loss (summed over micro-batches, checked on every rank) and the global gradient
norm (the same 2-norm TorchTitan's ``clip_grad_norm_`` computes: reduced over FSDP/TP through DTensor and over PP
stages). One all-reduce of a flag makes every rank take the same decision.

* ``stop``: the run raises ``NonFiniteStepError`` naming the step and the values. TorchTitan saves a checkpoint
  only after a step finished, so neither this step nor any later one is saved.
* ``skip``: the step's gradients are dropped (set to None): the optimizers update nothing, neither moments nor
  weight decay; the LR schedule and the data position move on as for any step. Skipped steps are counted and
  logged; more than ``max_consecutive_skips`` in a row stop the run as ``stop`` does. Not available with pipeline
  parallelism (TorchTitan's PP norm reduction needs the gradients on the device).

``inject_nonfinite_grad_steps`` (default empty) sets one gradient to NaN after the backward of the listed steps,
for fault drills and the tests: the guard then sees what a real overflow produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torchtitan.tools.logging import logger

ON_NONFINITE = ("stop", "skip")


@dataclass
class GuardConfig:
    """``[guard]``: what a step with a non-finite loss or gradient norm does."""

    on_nonfinite: str = "stop"
    """"stop": raise before the optimizer step (no checkpoint of this step or later); "skip": drop the step."""
    max_consecutive_skips: int = 3
    """With on_nonfinite = "skip": consecutive skipped steps allowed; one more stops the run."""
    inject_nonfinite_grad_steps: list[int] = field(default_factory=list)
    """Steps whose gradients get a NaN after the backward (fault drills, tests)."""

    def __post_init__(self):
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"guard.on_nonfinite = {self.on_nonfinite!r}: allowed values are "
                             + " or ".join(repr(v) for v in ON_NONFINITE))
        if isinstance(self.max_consecutive_skips, bool) or not isinstance(self.max_consecutive_skips, int) \
                or self.max_consecutive_skips < 1:
            raise ValueError(f"guard.max_consecutive_skips = {self.max_consecutive_skips!r}: must be an integer >= 1")
        bad = [s for s in self.inject_nonfinite_grad_steps if isinstance(s, bool) or not isinstance(s, int) or s < 1]
        if bad:
            raise ValueError(f"guard.inject_nonfinite_grad_steps = {self.inject_nonfinite_grad_steps!r}: steps are "
                             f"integers >= 1 (got {bad})")


def check_guard_with_parallelism(guard: GuardConfig, parallelism) -> None:
    """``[guard]`` against ``[parallelism]`` (checked by motif_titan.validate.validate_job_config)."""
    if guard.on_nonfinite == "skip" and parallelism.pipeline_parallel_degree > 1:
        raise ValueError("guard.on_nonfinite = 'skip' is not supported with pipeline parallelism "
                         "(parallelism.pipeline_parallel_degree > 1): use 'stop'")


class NonFiniteStepError(RuntimeError):
    pass


class NonfiniteGuard:
    """Called by the trainer: ``begin_step`` before a step, ``after_micro_batch`` after each micro-batch's
    backward; the check runs after the last one."""

    def __init__(self, config: GuardConfig, model_parts: list[torch.nn.Module], parallel_dims, device):
        self.config = config
        self.model_parts = model_parts
        self.parallel_dims = parallel_dims
        self.device = device
        self.skipped_total = 0
        self.skipped_consecutive = 0
        self._step = 0
        self._micro_batches = 1
        self._losses: list[torch.Tensor] = []

    def begin_step(self, step: int, micro_batches: int) -> None:
        self._step, self._micro_batches, self._losses = step, micro_batches, []

    def after_micro_batch(self, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach())
        if len(self._losses) == self._micro_batches:
            self._check()

    def _params(self):
        return [p for m in self.model_parts for p in m.parameters()]

    def _grad_norm(self) -> torch.Tensor:
        grads = [p.grad for p in self._params() if p.grad is not None]
        if self._step in self.config.inject_nonfinite_grad_steps and grads:
            grads[0].fill_(float("nan"))
        norm = torch.nn.utils.get_total_norm(grads, 2.0, False, True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        if self.parallel_dims.pp_enabled:
            norm = norm**2
            dist.all_reduce(norm, op=dist.ReduceOp.SUM, group=self.parallel_dims.get_mesh("pp").get_group())
            norm = norm.sqrt()
        return norm

    def _check(self) -> None:
        norm = self._grad_norm()
        # under loss parallelism (TP) the loss is a replicated DTensor
        loss = torch.stack([l.full_tensor() if isinstance(l, DTensor) else l for l in self._losses]).sum()
        flag = torch.stack([(~torch.isfinite(loss)).float(), (~torch.isfinite(norm)).float()]).to(self.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not bool(flag.any()):
            self.skipped_consecutive = 0
            return
        what = (f"step {self._step}: non-finite {'loss' if flag[0].item() else 'grad_norm'} "
                f"(loss {loss.item():.6g} on this rank, grad_norm {norm.item():.6g})")
        if self.config.on_nonfinite == "stop":
            raise NonFiniteStepError(f"{what}; stopping before the optimizer step (guard.on_nonfinite = 'stop'): "
                                     "no checkpoint of this step or a later one is saved")
        self.skipped_consecutive += 1
        self.skipped_total += 1
        if self.skipped_consecutive > self.config.max_consecutive_skips:
            raise NonFiniteStepError(f"{what}; {self.skipped_consecutive} consecutive non-finite steps exceed "
                                     f"guard.max_consecutive_skips = {self.config.max_consecutive_skips}: stopping")
        for p in self._params():
            p.grad = None
        logger.warning(f"{what}: step skipped, no optimizer update ({self.skipped_consecutive} consecutive, "
                       f"{self.skipped_total} skipped in total; guard.max_consecutive_skips = "
                       f"{self.config.max_consecutive_skips})")
