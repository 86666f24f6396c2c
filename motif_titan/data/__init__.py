"""Data for motif2 runs: the embedded default corpus and tokenizer, and the text dataloader builders."""

from .text_dataloader import EMBEDDED, LocalTextDataset, build_text_dataloader, build_tokenizer

__all__ = ["EMBEDDED", "LocalTextDataset", "build_text_dataloader", "build_tokenizer"]
