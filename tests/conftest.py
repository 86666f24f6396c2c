"""Without a GPU, run Triton kernels through the interpreter (decided when a kernel is decorated, so this must
happen before motif_titan is imported). Fixtures shared by unit and integration tests."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def seed_checkpoint(tmp_path_factory) -> str:
    """The debug model's initial weights, saved once for the session (see helpers.launch.create_seed_checkpoint)."""
    from helpers.launch import create_seed_checkpoint

    return create_seed_checkpoint(tmp_path_factory.mktemp("seed") / "run")


@pytest.fixture(scope="session")
def tokenizer():
    """The tokenizer packaged with motif_titan (``--model.hf_assets_path embedded``), built through TorchTitan."""
    from torchtitan.config import ConfigManager

    from motif_titan.data.text_dataloader import build_tokenizer

    return build_tokenizer(ConfigManager().parse_args(["--model.hf_assets_path", "embedded"]))
