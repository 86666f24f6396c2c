"""The curriculum dataloader (domain mixtures on a schedule, batch-size and sequence-length ramps, SFT packing, token
shards, streamed sources) as a dataloader config TorchTitan 0.3's trainer builds, for any 0.3 model:
``Trainer.Config.dataloader = CurriculumDataLoader.Config(curriculum=CurriculumConfig(...))``. Without domains it is
motif_titan's text dataloader (``dataset = "embedded"``, local files, token shards).

The loader is the one of 0.2.2 (``motif_titan.data.curriculum_dataloader``), fed the settings 0.2.2 reads from its
JobConfig: this config's fields plus what 0.3's trainer passes to ``build`` (DP rank and size, tokenizer, sequence
length, local batch size, the snapshot interval). A batch-size ramp needs a trainer that draws
``micro_batches_per_step(step)`` micro-batches a step: ``motif_titan.titan03.trainer.MotifTrainer``.
"""

from dataclasses import dataclass, field
from types import SimpleNamespace

from torchtitan.components.dataloader import BaseDataLoader, ParallelAwareDataloader

from motif_titan.data.curriculum import CurriculumConfig

EMBEDDED = "embedded"  # motif_titan.data.text_dataloader.EMBEDDED (which imports this module under 0.3)


def build_torchtitan_text_dataloader(dp_world_size: int, dp_rank: int, tokenizer, job_config,
                                     infinite: bool = True) -> ParallelAwareDataloader:
    """A dataset of TorchTitan's own (``c4``, ``c4_test``, ...) through 0.3's ``HuggingFaceTextDataLoader``: what
    0.2.2's ``build_text_dataloader`` is to the text dataloader there."""
    from torchtitan.hf_datasets.text_datasets import HuggingFaceTextDataLoader

    training = job_config.training
    loader = training.dataloader
    config = HuggingFaceTextDataLoader.Config(
        dataset=training.dataset, dataset_path=training.dataset_path, infinite=infinite,
        num_workers=loader.num_workers, persistent_workers=loader.persistent_workers, pin_memory=loader.pin_memory,
        prefetch_factor=loader.prefetch_factor)
    return config.build(dp_world_size=dp_world_size, dp_rank=dp_rank, tokenizer=tokenizer, seq_len=training.seq_len,
                        local_batch_size=training.local_batch_size,
                        snapshot_every_n_steps=getattr(loader, "snapshot_every_n_steps", None))


@dataclass
class _LoaderKwargs:
    num_workers: int
    persistent_workers: bool
    pin_memory: bool
    prefetch_factor: int | None
    snapshot_every_n_steps: int | None


class CurriculumDataLoader(BaseDataLoader):
    """Builds the curriculum dataloader (a ``ParallelAwareDataloader``) from its config; see the module docstring."""

    @dataclass(kw_only=True, slots=True)
    class Config(ParallelAwareDataloader.Config):
        dataset: str = EMBEDDED
        """Without curriculum domains: the text dataloader's ``training.dataset`` ("embedded", a TorchTitan
        dataset name, or any name with ``dataset_path``)."""
        curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
        """The ``[curriculum]`` section (``motif_titan.data.curriculum``)."""
        global_batch_size: int = -1
        """The run's ``training.global_batch_size`` (the batch ramp's end); -1: local batch x DP ranks."""
        hf_assets_path: str = EMBEDDED
        """The tokenizer folder, for ``curriculum.chat_template = "tokenizer"``."""
        document_positions: bool = True
        """Pretraining batches carry per-document positions (0.3's convention: its trainer builds flex document
        masks from them, see motif_titan.data.positions). motif2's configs set False: motif2 masks at EOS itself
        and its RoPE then sees the positions 0.2.2 gives it."""
        pipeline_micro_batches: int = 1
        """Pipeline micro-batches per local batch (``local_batch_size // pipeline_parallel_microbatch_size``; set by
        ``MotifTrainer`` under pipeline parallelism). 0.3 builds the loader with the micro-batch size and draws each
        pipeline micro-batch from it; the curriculum's clock counts local batches (its phases and ramps are keyed
        to trainer steps), so it draws whole local batches and hands them out in these slices, in order: the rows
        0.2.2's pipeline schedule cuts from the same batch."""

    def __new__(cls, config, *, dp_world_size: int, dp_rank: int, tokenizer, seq_len: int, local_batch_size: int,
                snapshot_every_n_steps: int | None = None, **kwargs) -> ParallelAwareDataloader:
        split = config.pipeline_micro_batches if config.curriculum.domains else 1  # text rows: the same either way
        if split > 1:
            local_batch_size *= split
            snapshot_every_n_steps = snapshot_every_n_steps and snapshot_every_n_steps // split
        loader = _LoaderKwargs(config.num_workers, config.persistent_workers, config.pin_memory,
                               config.prefetch_factor, snapshot_every_n_steps)
        job = SimpleNamespace(
            curriculum=config.curriculum,
            training=SimpleNamespace(local_batch_size=local_batch_size, seq_len=seq_len,
                                     global_batch_size=config.global_batch_size, dataset=config.dataset,
                                     dataset_path=config.dataset_path, dataloader=loader),
            # 0.3 runs motif2 without context parallelism (motif_titan.titan03.parallelize); the pipeline degree
            # is checked against the sequence ramp by MotifTrainer.
            parallelism=SimpleNamespace(context_parallel_degree=1, pipeline_parallel_degree=1),
            model=SimpleNamespace(name=None, flavor=None, hf_assets_path=config.hf_assets_path),
        )
        from motif_titan.data.curriculum_dataloader import build_curriculum_dataloader

        built = build_curriculum_dataloader(dp_world_size, dp_rank, tokenizer, job)
        if config.document_positions and hasattr(built, "document_positions_eos"):
            built.document_positions_eos = tokenizer.eos_id
        if split > 1:
            built.pipeline_micro_batches = split
        return built
