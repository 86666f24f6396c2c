"""Data for motif2 runs (and any TorchTitan model): the embedded default corpus and tokenizer, the text dataloader,
and the curriculum dataloader (domains, scheduled mixture, ramps, SFT packing, token shards)."""

from .curriculum import CurriculumConfig, CurriculumSchedule
from .curriculum_dataloader import CurriculumDataloader, CurriculumDataset, build_curriculum_dataloader
from .text_dataloader import EMBEDDED, LocalTextDataset, build_text_dataloader, build_tokenizer

__all__ = ["EMBEDDED", "CurriculumConfig", "CurriculumDataloader", "CurriculumDataset", "CurriculumSchedule",
           "LocalTextDataset", "build_curriculum_dataloader", "build_text_dataloader", "build_tokenizer"]
