"""Evaluation of Motif-2 checkpoints with lm-eval (EleutherAI's lm-evaluation-harness, the ``eval`` extra).

Importing this package registers the lm-eval model ``motif_titan`` (``Motif2LM``), which runs a TorchTitan DCP step
folder or an HF safetensors folder directly with motif_titan's model: ``loglikelihood``,
``loglikelihood_rolling`` and greedy ``generate_until`` with a key/value cache. Front door:
``python -m motif_titan.eval --checkpoint PATH --tasks TASKS`` (docs/eval.md).
"""

try:
    import lm_eval  # noqa: F401
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError("motif_titan.eval needs lm-eval: pip install 'motif_titan[eval]'") from e

from .decoding import KVCache, cached_forward, final_hidden, greedy_generate
from .lm_eval_model import Motif2LM
from .model_loading import load_model, resolve_model_args

__all__ = [
    "KVCache",
    "Motif2LM",
    "cached_forward",
    "final_hidden",
    "greedy_generate",
    "load_model",
    "resolve_model_args",
]
