"""The curriculum dataloader: TorchTitan ``build_dataloader_fn`` for any TorchTitan model.

``build_curriculum_dataloader`` reads ``[curriculum]`` (see :mod:`motif_titan.data.curriculum`); without domains it
is ``build_text_dataloader`` (``training.dataset``). The dataset yields whole micro-batches:

* pretraining: ``rows`` windows of ``row_len + 1`` tokens, each cut from one domain's packed token stream (the
  scheduled mixer picks the domain per window, so a weight is a token share);
  ``({"input": x[:, :-1]}, x[:, 1:])``. ``rows * row_len = local_batch_size * seq_len`` at every step.
* SFT: ``local_batch_size`` rows of ``seq_len`` positions packed with whole samples (the mixer picks the domain
  per sample); ``({"input": tokens, "positions": positions}, labels)`` -- models take ``positions`` as an
  extra input (motif2 and llama3 do).

Every DP rank (and every dataloader worker of a rank: with ``num_workers = W``, worker k produces micro-batches
k, k + W, ... and owns stream ``dp_rank * W + k``) keeps a :class:`~motif_titan.data.ramps.BatchClock` that
tells which trainer step each micro-batch belongs to, so phases keyed to steps or tokens, and ramps, follow the
trainer however far the loader reads ahead. The dataset's state (clock, mixer counters, each domain stream's
epoch / position / leftover tokens, SFT packer) goes into TorchTitan's checkpoint through
``ParallelAwareDataloader`` (keyed ``dp_rank_<r>``), per worker by torchdata's StatefulDataLoader; a loader
restored from it continues exactly with the same DP degree and ``num_workers``. A streamed domain (``streaming =
true``) is read by a :class:`~motif_titan.data.packing.StreamCursor` of the same stream index, its position in the
stream saved the same way.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader
from torchtitan.components.dataloader import ParallelAwareDataloader
from torchtitan.components.tokenizer import BaseTokenizer
from torchtitan.tools.logging import logger

from .curriculum import CurriculumConfig, CurriculumSchedule, DomainSpec, parse_curriculum
from .document_sources import DomainDocuments, StreamedDocuments, open_domain
from .mixer import ScheduledMixer
from .packing import DocumentCursor, PackedDocumentStream, StreamCursor
from .positions import DocumentPositionsLoader
from .ramps import BatchClock, BatchSchedule, validate_ramps
from .sft import SFTRowPacker, SimpleChatTemplate, TokenizerChatTemplate, conversation, sample_labels
from .text_dataloader import build_text_dataloader

STATE_MARKER = "curriculum_state_version"


@dataclass(frozen=True)
class CurriculumPlan:
    """Everything validated from the config: domains, mixture schedule, step shapes."""

    mode: str
    unit: str
    seed: int
    domains: tuple[DomainSpec, ...]
    schedule: CurriculumSchedule
    batches: BatchSchedule

    @property
    def sft(self) -> bool:
        return self.mode == "sft"

    def schedule_point(self, clock: BatchClock) -> int:
        return clock.step if self.unit == "steps" else clock.tokens_before_step


def build_curriculum_plan(config: CurriculumConfig, training, dp_world_size: int) -> CurriculumPlan:
    domains, schedule = parse_curriculum(config)
    batches = validate_ramps(config, training, dp_world_size, sft=config.mode == "sft")
    return CurriculumPlan(mode=config.mode, unit=config.unit, seed=config.seed, domains=domains,
                          schedule=schedule, batches=batches)


class CurriculumDataset(IterableDataset, Stateful):
    """Micro-batches of one DP rank (see the module docstring)."""

    def __init__(self, plan: CurriculumPlan, documents: Sequence[DomainDocuments | StreamedDocuments],
                 tokenizer: BaseTokenizer,
                 dp_rank: int = 0, dp_world_size: int = 1, chat_template=None) -> None:
        self.plan = plan
        self.documents = list(documents)
        self.tokenizer = tokenizer
        self.dp_rank, self.dp_world_size = dp_rank, dp_world_size
        self.chat_template = chat_template or SimpleChatTemplate()
        self._layout: tuple[int, int] | None = None
        self._loaded_state: dict | None = None

    # -- streams of one (DP rank, worker) ---------------------------------------------------------------------

    def _ensure_setup(self) -> None:
        info = get_worker_info()
        layout = (info.id, info.num_workers) if info is not None else (0, 1)
        if self._layout == layout:
            return
        worker, num_workers = layout
        self._layout = layout
        stream = self.dp_rank * num_workers + worker
        num_streams = self.dp_world_size * num_workers
        n = len(self.plan.domains)
        cursors = [StreamCursor(docs, stream, num_streams) if isinstance(docs, StreamedDocuments)
                   else DocumentCursor(docs, self.plan.seed, d, stream, num_streams)
                   for d, docs in enumerate(self.documents)]
        if self.plan.sft:
            self.cursors = cursors
            self.packer = SFTRowPacker(self.plan.batches.seq_len, self.tokenizer.eos_id)
        else:
            self.streams = [PackedDocumentStream(c, self.tokenizer) for c in cursors]
        self.mixer = ScheduledMixer(self.plan.schedule, self.plan.seed, stream)
        self.clock = BatchClock(self.plan.batches)
        self.micro_batches = 0
        """Micro-batches of this DP rank's stream passed so far (by all its workers)."""
        self.tokens_seen = [0] * n
        self.sft_dropped_samples = [0] * n
        self.padding_tokens = 0
        if self._loaded_state is not None:
            self._apply_state(self._loaded_state)
            self._loaded_state = None

    def __iter__(self):
        self._ensure_setup()
        worker, num_workers = self._layout
        while True:
            owned = self.micro_batches % num_workers == worker
            batch = self._micro_batch() if owned else None
            self.clock.advance()
            self.micro_batches += 1
            if owned:
                yield batch

    def _micro_batch(self):
        step, point = self.clock.step, self.plan.schedule_point(self.clock)
        if self.plan.sft:
            return self._sft_micro_batch(point)
        batches = self.plan.batches
        row_len = batches.row_len(step)
        windows = np.empty((batches.rows(step), row_len + 1), dtype=np.int64)
        for row in range(len(windows)):
            domain = self.mixer.draw(point)
            windows[row] = self.streams[domain].take(row_len + 1)
            self.tokens_seen[domain] += row_len
        x = torch.from_numpy(windows)
        return {"input": x[:, :-1].contiguous()}, x[:, 1:].contiguous()

    def _next_sft_sample(self, point: float):
        domain = self.mixer.draw(point)
        cursor, spec = self.cursors[domain], self.plan.domains[domain]
        # Give up once the whole share was tried: one epoch on from where this search started (a streamed
        # domain's share has no length to count to).
        give_up_at = (cursor.epoch + 1, cursor.position)
        while True:
            messages = conversation(cursor.next_document(), spec)
            if any(m["role"] == "assistant" for m in messages):
                tokens, targets = self.chat_template.encode(messages, self.tokenizer)
                if len(tokens) <= self.plan.batches.seq_len:
                    return tokens, sample_labels(tokens, targets), domain
            self.sft_dropped_samples[domain] += 1
            if (cursor.epoch, cursor.position) >= give_up_at:
                break
        raise ValueError(f"curriculum.domains[{domain}] ({spec.name!r}): no sample fits in training.seq_len = "
                         f"{self.plan.batches.seq_len} tokens with an assistant message")

    def _sft_micro_batch(self, point: float):
        rows = [self.packer.pack_row(lambda: self._next_sft_sample(point))
                for _ in range(self.plan.batches.local_batch_size)]
        for _, _, _, placed in rows:
            for domain, length in placed:
                self.tokens_seen[domain] += length
            self.padding_tokens += self.plan.batches.seq_len - sum(length for _, length in placed)
        tokens, labels, positions = (torch.from_numpy(np.stack([r[i] for r in rows])) for i in range(3))
        return {"input": tokens, "positions": positions}, labels

    # -- state ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        self._ensure_setup()
        state = {
            STATE_MARKER: 1,
            "layout": [self.dp_rank, self.dp_world_size, *self._layout],
            "num_documents": _num_documents(self.documents),
            "micro_batches": self.micro_batches,
            "clock": self.clock.state_dict(),
            "mixer": self.mixer.state_dict(),
            "tokens_seen": list(self.tokens_seen),
            "sft_dropped_samples": list(self.sft_dropped_samples),
            "padding_tokens": self.padding_tokens,
        }
        if self.plan.sft:
            state["cursors"] = [c.state_dict() for c in self.cursors]
            state["packer"] = self.packer.state_dict()
        else:
            state["streams"] = [s.state_dict() for s in self.streams]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._layout = None  # set up again (in this process: a worker, or the main one) and then apply
        self._loaded_state = state

    def _apply_state(self, state: dict[str, Any]) -> None:
        layout = [self.dp_rank, self.dp_world_size, *self._layout]
        if state["layout"] != layout:
            raise ValueError(f"curriculum dataloader state saved for [dp_rank, dp_world_size, worker, num_workers]"
                             f" = {state['layout']}, restored into {layout}: keep the DP degree and "
                             "training.dataloader.num_workers of the run that saved it")
        if state["num_documents"] != _num_documents(self.documents):
            logger.warning(f"curriculum domains had {state['num_documents']} documents when saved, now "
                           f"{_num_documents(self.documents)}: the data order differs from the saved run")
        self.micro_batches = state["micro_batches"]
        self.clock.load_state_dict(state["clock"])
        self.mixer.load_state_dict(state["mixer"])
        self.tokens_seen = list(state["tokens_seen"])
        self.sft_dropped_samples = list(state["sft_dropped_samples"])
        self.padding_tokens = state["padding_tokens"]
        if self.plan.sft:
            for cursor, cursor_state in zip(self.cursors, state["cursors"]):
                cursor.load_state_dict(cursor_state)
            self.packer.load_state_dict(state["packer"])
        else:
            for stream, stream_state in zip(self.streams, state["streams"]):
                stream.load_state_dict(stream_state)


def _num_documents(documents: Sequence[DomainDocuments | StreamedDocuments]) -> list[int | None]:
    """Documents per domain; None for a streamed one (its length is unknown)."""
    return [None if isinstance(d, StreamedDocuments) else len(d) for d in documents]


def _dataset_states(obj: Any) -> list[dict]:
    """Every CurriculumDataset state inside a StatefulDataLoader state (one per worker)."""
    if isinstance(obj, dict):
        if STATE_MARKER in obj:
            return [obj]
        return [s for value in obj.values() for s in _dataset_states(value)]
    if isinstance(obj, (list, tuple)):
        return [s for value in obj for s in _dataset_states(value)]
    return []


class CurriculumDataloader(DocumentPositionsLoader, ParallelAwareDataloader):
    """TorchTitan's ParallelAwareDataloader over a CurriculumDataset (batches are made by the dataset), plus what
    the trainer and the metrics processor ask of it: micro-batches per step (the batch ramp) and metrics."""

    def __init__(self, dataset: CurriculumDataset, dp_rank: int, dp_world_size: int, **kwargs) -> None:
        super().__init__(dataset, dp_rank=dp_rank, dp_world_size=dp_world_size, batch_size=None, **kwargs)
        self.plan = dataset.plan
        self.trainer_drives_batch_ramp = False
        """Set by motif_titan.trainer.CurriculumTrainer, which draws micro_batches_per_step(step) per step."""
        self.pipeline_micro_batches = 1
        """Slices each micro-batch is handed out in, in order (TorchTitan 0.3's pipeline micro-batches, drawn one
        by one: motif_titan.titan03.dataloader); the dataset's clock still counts whole micro-batches."""

    def _tokens_before_step(self, step: int) -> int:
        """Global tokens of steps 1 .. step - 1 (cached: metrics ask for increasing steps)."""
        cached_step, tokens = getattr(self, "_tokens_cache", (1, 0))
        if step < cached_step:
            cached_step, tokens = 1, 0
        for s in range(cached_step, step):
            tokens += self.plan.batches.step_tokens(s)
        self._tokens_cache = (step, tokens)
        return tokens

    def micro_batches_per_step(self, step: int) -> int:
        return self.plan.batches.micro_batches(step)

    def __iter__(self):
        if self.plan.batches.batch_ramped and not self.trainer_drives_batch_ramp:
            raise RuntimeError(
                "curriculum.batch_ramp_start_tokens > 0 needs a trainer that draws micro_batches_per_step(step) "
                "micro-batches each step: run motif_titan.trainer.CurriculumTrainer (python -m motif_titan.train), "
                "or set curriculum.batch_ramp_start_tokens = 0")
        if self.pipeline_micro_batches == 1:
            return super().__iter__()
        return _slices(super().__iter__(), self.pipeline_micro_batches)

    def metrics(self, step: int) -> dict[str, float]:
        """Schedule weights at ``step`` and this DP rank's tokens per domain so far (what the loader produced,
        including what it prefetched), SFT drops and padding."""
        clock = BatchClock(self.plan.batches, step=step)
        if self.plan.unit == "tokens":
            clock.tokens_before_step = self._tokens_before_step(step)
        weights = self.plan.schedule.weights(self.plan.schedule_point(clock))
        if self.num_workers == 0:
            states = [self.dataset.state_dict()]
        else:
            states = _dataset_states(StatefulDataLoader.state_dict(self))
        metrics = {}
        for d, domain in enumerate(self.plan.domains):
            metrics[f"curriculum/weight/{domain.name}"] = weights[d]
            metrics[f"curriculum/tokens_seen/{domain.name}"] = float(sum(s["tokens_seen"][d] for s in states))
            # epochs begun over the domain (> 0: its documents are being repeated)
            metrics[f"curriculum/epoch/{domain.name}"] = float(max(
                ((s["streams"] if "streams" in s else s["cursors"])[d]["epoch"] for s in states), default=0))
        if self.plan.sft:
            metrics["curriculum/sft_dropped_samples"] = float(sum(sum(s["sft_dropped_samples"]) for s in states))
            metrics["curriculum/sft_padding_tokens"] = float(sum(s["padding_tokens"] for s in states))
        if self.plan.batches.batch_ramped or self.plan.batches.seq_len_ramp_start:
            metrics["curriculum/step_tokens"] = float(self.plan.batches.step_tokens(step))
            metrics["curriculum/row_len"] = float(self.plan.batches.row_len(step))
        return metrics


def _slices(batches, parts: int):
    """Each ``(inputs, labels)`` batch as ``parts`` consecutive row slices (the rows split evenly: under pipeline
    parallelism a step's rows stay fixed, as a sequence-length ramp is refused there)."""
    for inputs, labels in batches:
        rows = labels.shape[0] // parts
        for i in range(parts):
            part = slice(i * rows, (i + 1) * rows)
            yield {key: value[part] for key, value in inputs.items()}, labels[part]


def _check_model_masks(job_config, plan: CurriculumPlan) -> None:
    """SFT rows hold several samples: the model must block attention at EOS (block_causal)."""
    if not plan.sft:
        return
    if getattr(job_config.model, "name", None) is None:
        return  # TorchTitan 0.3: the model's flavor is checked by motif_titan.titan03.trainer
    from torchtitan.protocols.train_spec import get_train_spec

    try:
        model_args = get_train_spec(job_config.model.name).model_args[job_config.model.flavor]
    except (ValueError, KeyError):
        return  # the trainer reports an unknown model or flavor itself
    check_sft_masks(model_args, job_config.model.name, job_config.model.flavor)


def check_seq_len_ramp_fits_pipeline(config: CurriculumConfig, pp_degree: int) -> None:
    if config.seq_len_ramp_start and pp_degree > 1:
        raise ValueError(
            f"curriculum.seq_len_ramp_start = {config.seq_len_ramp_start} with "
            f"parallelism.pipeline_parallel_degree = {pp_degree}: pipeline stages infer their activation shapes "
            f"once, at the first step, and a new row length then fails in the first backward; allowed with "
            f"pipeline parallelism: curriculum.seq_len_ramp_start = 0 (off)")


def check_sft_masks(model_args, name: str, flavor: str) -> None:
    """A model that says how it masks attention (``attn_mask_type``) must block it at EOS for packed SFT rows."""
    mask_type = getattr(model_args, "attn_mask_type", None)
    if mask_type is not None and mask_type != "block_causal":
        raise ValueError(
            f"curriculum.mode = 'sft' packs several samples per row and needs attention blocked at their EOS: "
            f"model {name!r} flavor {flavor!r} has attn_mask_type "
            f"{mask_type!r}; allowed: a flavor with attn_type 'flex' and attn_mask_type 'block_causal'")


def build_curriculum_dataloader(dp_world_size: int, dp_rank: int, tokenizer: BaseTokenizer, job_config,
                                infinite: bool = True) -> ParallelAwareDataloader:
    """The TrainSpec's ``build_dataloader_fn``: the curriculum of ``[curriculum]``, or without domains
    ``build_text_dataloader``. Every config error is raised here, before training starts."""
    config = getattr(job_config, "curriculum", None)
    if config is None or not config.domains:
        return build_text_dataloader(dp_world_size, dp_rank, tokenizer, job_config, infinite=infinite)
    plan = build_curriculum_plan(config, job_config.training, dp_world_size)
    _check_model_masks(job_config, plan)
    cp_degree = job_config.parallelism.context_parallel_degree
    if plan.sft and cp_degree > 1:
        raise ValueError(
            f"curriculum.mode = 'sft' with parallelism.context_parallel_degree = {cp_degree}: packed SFT rows "
            f"give the model per-sample positions, and TorchTitan 0.2.2's context parallelism neither shards them "
            f"nor lets them through (it passes its own 0..seq_len-1 positions); allowed with curriculum.mode "
            f"'sft': context_parallel_degree = 1")
    check_seq_len_ramp_fits_pipeline(config, job_config.parallelism.pipeline_parallel_degree)
    if tokenizer is None or tokenizer.eos_id is None or tokenizer.bos_id is None:
        raise ValueError("the curriculum dataloader needs a tokenizer with BOS and EOS ids (model.hf_assets_path)")
    chat_template = None
    if plan.sft and config.chat_template == "tokenizer":
        chat_template = TokenizerChatTemplate(job_config.model.hf_assets_path)
    documents = [open_domain(i, domain, tokenizer, plan.sft) for i, domain in enumerate(plan.domains)]
    num_workers = job_config.training.dataloader.num_workers
    streams = dp_world_size * max(1, num_workers)
    for i, (domain, docs) in enumerate(zip(plan.domains, documents)):
        if not isinstance(docs, StreamedDocuments) and len(docs) < streams:  # a stream checks as it reads
            raise ValueError(f"curriculum.domains[{i}] ({domain.name!r}) has {len(docs)} documents, fewer than the "
                             f"{streams} streams (DP ranks x training.dataloader.num_workers) that read it")
    dataset = CurriculumDataset(plan, documents, tokenizer, dp_rank, dp_world_size, chat_template)
    logger.info(f"Curriculum ({plan.mode}): " + ", ".join(
        f"{d.name} {n} documents" if n is not None else f"{d.name} streamed"
        for d, n in zip(plan.domains, _num_documents(documents)))
        + f"; dp rank {dp_rank} of {dp_world_size}, {num_workers} workers")
    return CurriculumDataloader(dataset, dp_rank, dp_world_size, **asdict(job_config.training.dataloader))
