"""Muon for TorchTitan: one ``torch.optim.Optimizer`` holding Muon groups (2-D block matrices) and AdamW groups
(everything else), with three ways to place Newton-Schulz on sharded (DTensor) matrices.

- ``mode="single"``: every matrix is local (plain tensors or fully replicated DTensors); torch.optim.Muon's numerics.
- ``mode="distributed"``: the all-gather baseline of Liu et al.: every rank of a matrix's shard group receives every
  block, runs Newton-Schulz on the full matrix, keeps its own block (``chunk_size`` matrices at a time).
- ``mode="parallel"``: the report's Algorithm 1: matrices get owners (``assignment``), blocks travel to the owner
  (an all-to-all, posted as one batch of point-to-point transfers), the owner runs Newton-Schulz, the result travels
  back the same way, every rank updates its block.
  With ``pipeline`` the matrices are processed in chunks of ``chunk_size`` (the first one an eighth of that, since
  nothing overlaps its gather): the next chunk's gather and the previous chunk's scatter run while the current
  chunk's Newton-Schulz computes, and full matrices are freed chunk by chunk. The momentum pass also runs chunk by
  chunk, just before each gather, so only one chunk's bf16 copies exist at a time.

The math (momentum, Newton-Schulz, lr rule, decoupled decay) lives in ``update_rule`` and ``newton_schulz``; the
block movement in ``exchange``; this class only orchestrates. AdamW groups are stepped by an inner
``torch.optim.AdamW`` that shares this optimizer's group dicts and state, so LR schedulers and DCP see one optimizer.
"""

from collections import defaultdict
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from motif_titan.config_checks import expect, is_int, refuse

from .assignment import assign_owners, check_assignment
from .exchange import block_of, gather_full, scatter_blocks
from .newton_schulz import EPS, iteration_coefficients, newton_schulz_flops, zeropower_via_newton_schulz
from .shard_layout import ShardLayout, local_tensor, shard_layout
from .update_rule import adjusted_lr, apply_update, check_adjust_lr, momentum_update

MODES = ("single", "distributed", "parallel")


def check_chunk_size(chunk_size: int) -> None:
    expect("optimizer.chunk_size", chunk_size, is_int, ">= 1", lambda v: v >= 1)


class Muon(Optimizer):
    """Muon + AdamW in one optimizer.

    ``muon_params``: 2-D matrices (plain tensors or DTensors with Shard / _StridedShard / Replicate placements:
    the layouts FSDP2, HSDP, TP and their compositions produce), named by ``param_names`` in errors.
    ``adamw_params``: everything else (embeddings, head, norms, lambda vectors, PolyNorm), AdamW with
    ``lr * adamw_lr_ratio``.
    """

    def __init__(
        self,
        muon_params: list[Tensor],
        adamw_params: list[Tensor],
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_coefficients: str = "keller",
        adjust_lr: str = "match_rms_adamw",
        eps: float = EPS,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_lr_ratio: float = 1.0,
        mode: str = "parallel",
        assignment: str = "flops_round_robin",
        chunk_size: int = 32,
        pipeline: bool = True,
        param_names: list[str] | None = None,
    ) -> None:
        # a library entry point: the same checks as the [optimizer] section's (optim.builder.validate_muon_config)
        if mode not in MODES:
            refuse("Muon mode", mode, list(MODES))
        check_assignment(assignment)
        check_adjust_lr(adjust_lr)
        check_chunk_size(chunk_size)
        names = list(param_names) if param_names is not None else [f"muon_params[{i}]"
                                                                     for i in range(len(muon_params))]
        if len(names) != len(muon_params):
            raise ValueError(f"Muon: {len(names)} param_names for {len(muon_params)} muon_params")
        for name, p in zip(names, muon_params):
            if p.ndim != 2:
                raise ValueError(f"Muon takes 2-D matrices only; {name} has shape {tuple(p.shape)}")
        self.mode, self.assignment, self.chunk_size, self.pipeline = mode, assignment, chunk_size, pipeline
        self.coefficients = iteration_coefficients(ns_coefficients, ns_steps)

        # Always the two groups, even when one is empty (a pipeline stage holding only the final norm and the head
        # has no Muon matrix): TorchTitan's LR-scheduler container saves the first model part's scheduler and
        # loads it into every part's, which needs the same number of groups in every part's optimizer.
        adamw_groups = [{"params": list(adamw_params), "use_muon": False, "lr": lr * adamw_lr_ratio}]
        self._adamw = torch.optim.AdamW(adamw_groups, lr=lr * adamw_lr_ratio, betas=adamw_betas, eps=adamw_eps,
                                        weight_decay=weight_decay)
        muon_groups = [{"params": list(muon_params), "use_muon": True}]
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                    "adjust_lr": adjust_lr, "eps": eps}
        super().__init__(muon_groups + adamw_groups, defaults)
        self._link_adamw()
        self._initialized_groups: set = set()
        self._names: dict[Tensor, str] = dict(zip(muon_params, names))
        # every layout is read (and its placements checked) now, so a parameter whose layout cannot be read stops
        # the build, not step 1
        self._layouts: dict[Tensor, ShardLayout] = {p: shard_layout(p, n) for p, n in self._names.items()}
        if mode == "single":
            for p, layout in self._layouts.items():
                if layout.group is not None and dist.get_world_size(layout.group) > 1:
                    raise ValueError(
                        f"optimizer.name = 'Muon' runs Newton-Schulz on whole local matrices, but {self._names[p]} "
                        f"is sharded over {dist.get_world_size(layout.group)} ranks (placements "
                        f"{tuple(p.placements)}): use 'ParallelMuon' or 'DistributedMuon'"
                    )

    def _link_adamw(self) -> None:
        """Point the inner AdamW at this optimizer's AdamW group dicts and state (after init and after a load)."""
        self._adamw.param_groups = [g for g in self.param_groups if not g["use_muon"]]
        self._adamw.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._link_adamw()

    @contextmanager
    def filled_groups_only(self):
        """Hide the empty group (if any) while DCP loads a flattened state dict: torch's unflattening reads each
        group's settings under its first parameter's name, which an empty group does not have (IndexError in
        ``_unflatten_optim_state_dict``). Saving needs nothing: an empty group adds no key."""
        kinds = [g["use_muon"] for g in self.param_groups]
        empty = {g["use_muon"]: g for g in self.param_groups if not g["params"]}
        self.param_groups = [g for g in self.param_groups if g["params"]]
        try:
            yield
        finally:
            by_kind = {g["use_muon"]: g for g in self.param_groups} | empty
            self.param_groups = [by_kind[kind] for kind in kinds]
            self._link_adamw()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_group_step(group)
        self._adamw.step()
        return loss

    # ---- Muon ------------------------------------------------------------------------------------------------

    def _muon_group_step(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        # matrices grouped by the process group that shards them (None: local)
        buckets: dict[Any, list[int]] = defaultdict(list)
        layouts = [self._layout(p) for p in params]
        for i, layout in enumerate(layouts):
            buckets[layout.group].append(i)
        for process_group, indices in buckets.items():
            if process_group is None or self.mode == "single" and dist.get_world_size(process_group) == 1:
                for i in indices:
                    self._apply(group, params[i], zeropower_via_newton_schulz(
                        self._momentum(group, params[i]), self.coefficients, group["eps"]))
                continue
            self._sharded_step(group, [params[i] for i in indices], [layouts[i] for i in indices], process_group)

    def _layout(self, param: Tensor) -> ShardLayout:
        """The parameter's shard layout, read once at build time (it costs ~0.1 ms of CPU per matrix). The update
        is computed from the gradient's blocks, so the gradient must be laid out like the parameter."""
        grad = param.grad
        grad_mesh, param_mesh = getattr(grad, "device_mesh", None), getattr(param, "device_mesh", None)
        if (getattr(grad, "placements", None) != getattr(param, "placements", None)
                or grad_mesh is not param_mesh and grad_mesh != param_mesh):
            raise NotImplementedError(
                f"Muon: the gradient of {self._names[param]} has placements {getattr(grad, 'placements', None)}, "
                f"the parameter {getattr(param, 'placements', None)}; Muon needs them equal"
            )
        return self._layouts[param]

    def _momentum(self, group: dict, param: Tensor) -> Tensor:
        """Advance the parameter's momentum buffer; return this rank's block of the bf16 matrix to orthogonalize
        (computed chunk by chunk, just before its exchange, so only a chunk's bf16 copies exist at a time)."""
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param.grad)
        return momentum_update(local_tensor(state["momentum_buffer"]), local_tensor(param.grad), group["momentum"],
                               group["nesterov"])

    def _apply(self, group: dict, param: Tensor, update_block: Tensor) -> None:
        lr = group["lr"]
        apply_update(local_tensor(param), update_block, lr, group["weight_decay"],
                     adjusted_lr(lr, group["adjust_lr"], param.shape))

    def _sharded_step(self, group: dict, params: list[Tensor], layouts: list[ShardLayout],
                      process_group: dist.ProcessGroup) -> None:
        size = dist.get_world_size(process_group)
        me = dist.get_rank(process_group)
        device = local_tensor(params[0]).device
        eps = group["eps"]
        if process_group not in self._initialized_groups:
            # NCCL creates a group's communicator at its first operation, which every rank must join; a rank with
            # nothing to send or receive posts no point-to-point operation, so a collective comes first
            dist.all_reduce(torch.zeros(1, device=device), group=process_group)
            self._initialized_groups.add(process_group)
        if self.mode == "distributed":
            # every rank receives every matrix; chunks bound the full matrices held at once
            order, owners = list(range(len(params))), [None] * len(params)
            chunks = [order[i:i + self.chunk_size] for i in range(0, len(order), self.chunk_size)]
        else:
            costs = [newton_schulz_flops(*layout.global_shape, len(self.coefficients)) for layout in layouts]
            order, owners = assign_owners(costs, size, self.assignment)
            if self.pipeline:
                # nothing overlaps the first chunk's gather: a short first chunk keeps that wait short
                first = max(1, self.chunk_size // 8)
                chunks = [order[:first]] + [order[i:i + self.chunk_size]
                                            for i in range(first, len(order), self.chunk_size)]
            else:
                chunks = [order]

        def start_gather(chunk):
            receivers = [list(range(size)) if owners[i] is None else [owners[i]] for i in chunk]
            blocks = [self._momentum(group, params[i]) for i in chunk]
            return gather_full(blocks, [layouts[i] for i in chunk], receivers, process_group, device)

        def orthogonalize(full: dict[int, Tensor]) -> dict[int, Tensor]:
            return {j: zeropower_via_newton_schulz(m, self.coefficients, eps) for j, m in full.items()}

        def apply_chunk(chunk, blocks):
            for i, block in zip(chunk, blocks):
                self._apply(group, params[i], block)

        if self.mode == "distributed":
            for chunk in chunks:
                full = orthogonalize(start_gather(chunk).wait())
                apply_chunk(chunk, [block_of(full[j], layouts[i], me) for j, i in enumerate(chunk)])
            return

        # parallel: gather(c+1) and scatter(c-1) in flight while Newton-Schulz of chunk c computes
        pending_gather = start_gather(chunks[0])
        pending_scatter = None
        for c, chunk in enumerate(chunks):
            full = pending_gather.wait()
            pending_gather = start_gather(chunks[c + 1]) if c + 1 < len(chunks) else None
            results = orthogonalize(full)
            del full
            if pending_scatter is not None:
                previous_chunk, previous = pending_scatter
                apply_chunk(previous_chunk, previous.wait())
            pending_scatter = (chunk, scatter_blocks(results, [layouts[i] for i in chunk],
                                                     [owners[i] for i in chunk], process_group, device))
            del results
        previous_chunk, previous = pending_scatter
        apply_chunk(previous_chunk, previous.wait())
