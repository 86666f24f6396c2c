"""Measured logits drift between a source checkpoint and its upscaled copy, evaluated layer by layer so neither
model is ever whole in memory (for 2.6B -> 12.7B: one 12.7B layer, ~2.2 GB in float64, plus the head in chunks).

Both models run in float64 on the same random tokens, so the drift measures the written weights alone (their
dtype's rounding, the noise's rounding), not the arithmetic of the comparison.
drift = max |logits_target - logits_source| / max |logits_source|.
"""

import torch

from motif_titan.checkpoint_io import CheckpointReader
from motif_titan.model import Motif2Model, Motif2ModelArgs
from motif_titan.model.model import precompute_rope_cache


@torch.no_grad()
def streamed_logits(reader: CheckpointReader, args: Motif2ModelArgs, tokens: torch.Tensor,
                    head_chunk: int = 16384) -> torch.Tensor:
    """float64 logits of the checkpoint's model on ``tokens`` (bs, seq), loading one layer at a time."""
    with torch.device("meta"):
        model = Motif2Model(args)
    embedding = reader.get("tok_embeddings.weight")
    h = embedding[tokens].double()
    del embedding
    rope_cache = precompute_rope_cache(args.head_dim, tokens.shape[1], args.rope_theta, torch.float64)
    for index, block in model.layers.items():
        prefix = f"layers.{index}."
        block.to_empty(device="cpu").double()
        names = [name for name, _ in block.named_parameters()]
        tensors = reader.get_many([prefix + name for name in names])
        block.load_state_dict({name: tensors[prefix + name] for name in names}, strict=True)
        h = block(h, rope_cache, None)
        block.to_empty(device="meta")
    h = torch.nn.functional.rms_norm(h, (args.dim,), reader.get("norm.weight").double(), args.norm_eps)
    head = reader.get("tok_embeddings.weight" if args.enable_weight_tying else "output.weight")
    return torch.cat([h @ head[i:i + head_chunk].double().T for i in range(0, head.shape[0], head_chunk)], dim=-1)


def logits_drift(source: CheckpointReader, source_args: Motif2ModelArgs, target: CheckpointReader,
                 target_args: Motif2ModelArgs, n_tokens: int = 32, seed: int = 0) -> float:
    """max |target - source| / max |source| over the logits of ``n_tokens`` random tokens (one sequence)."""
    tokens = torch.randint(0, source_args.vocab_size, (1, n_tokens), generator=torch.Generator().manual_seed(seed))
    reference = streamed_logits(source, source_args, tokens)
    upscaled = streamed_logits(target, target_args, tokens)
    return ((upscaled - reference).abs().max() / reference.abs().max()).item()
