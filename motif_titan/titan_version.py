"""Which TorchTitan is installed, and the one call that differs between the versions for code shared by both.

motif_titan works with TorchTitan 0.2.2 and 0.3.x. Its model, kernels, optimizer math and scheduling, data,
upscaler, export and eval are the same code under both. The integration is per version: 0.2.2's TrainSpec,
TOML JobConfig and trainer (``train_spec.py``, ``train.py``, ``trainer.py``, ``validate.py``,
``job_config.py``, ``infra/parallelize.py``, ``optim/builder.py``), and 0.3's ModelSpec, config functions and
configurable components (``motif_titan.titan03``).
"""

from importlib.metadata import version


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


TORCHTITAN_VERSION: str = version("torchtitan")
TORCHTITAN_03: bool = _release(TORCHTITAN_VERSION) >= (0, 3)
"""True under TorchTitan 0.3.x (``Trainer.Config`` and ``ModelSpec``), False under 0.2.2 (TOML and TrainSpec)."""


def _check_torch_for_titan03() -> None:
    """TorchTitan 0.3.0 does not state its torch requirement, and fails to import under torch < 2.12 (it needs
    ``torch.distributed.fsdp.DataParallelMeshDims``): say so before that import error."""
    import torch

    if _release(torch.__version__) < (2, 12):
        raise ImportError(f"TorchTitan {TORCHTITAN_VERSION} needs torch >= 2.12 (installed: {torch.__version__}); "
                          "with this torch install torchtitan==0.2.2 (pip install 'torchtitan==0.2.2')")


if TORCHTITAN_03:
    _check_torch_for_titan03()


def load_hf_tokenizer(path: str):
    """TorchTitan's HuggingFaceTokenizer of the tokenizer folder ``path`` (0.3 builds it from a config)."""
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    if TORCHTITAN_03:
        return HuggingFaceTokenizer(HuggingFaceTokenizer.Config(), tokenizer_path=str(path))
    return HuggingFaceTokenizer(str(path))
