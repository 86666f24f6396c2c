"""Per-document positions for pretraining rows, for trainers that read document boundaries from them.

TorchTitan 0.3's text dataloader yields ``{"input": tokens, "positions": positions}`` with positions restarting at
every document, and 0.3's trainer builds flex attention's document masks from them (its own models require them).
motif_titan's pretraining rows are windows cut from each domain's packed stream, whose documents end with EOS; a
loader with ``document_positions_eos`` set adds the positions those EOS tokens imply (SFT rows bring their own).
TorchTitan 0.2.2 builds masks from EOS itself: there the attribute stays None and batches are unchanged.
"""

import torch


def document_positions(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(bs, seq) tokens -> (bs, seq) positions within their document: 0 at a row's start and after every EOS."""
    seq = tokens.shape[-1]
    index = torch.arange(seq, device=tokens.device).expand_as(tokens)
    starts = torch.zeros_like(tokens, dtype=torch.bool)
    starts[..., 0] = True
    starts[..., 1:] = tokens[..., :-1] == eos_id
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-1).values
    return index - first


class DocumentPositionsLoader:
    """Mixed into a dataloader ahead of it: with ``document_positions_eos`` set, every batch without positions gets
    ``document_positions`` of its input."""

    document_positions_eos: int | None = None

    def __iter__(self):
        batches = super().__iter__()
        if self.document_positions_eos is None:
            return batches
        return self._with_positions(batches, self.document_positions_eos)

    @staticmethod
    def _with_positions(batches, eos_id: int):
        for inputs, labels in batches:
            if "positions" not in inputs:
                inputs = {**inputs, "positions": document_positions(inputs["input"], eos_id)}
            yield inputs, labels
