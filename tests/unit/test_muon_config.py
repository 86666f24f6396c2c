"""Muon inside real TorchTitan training runs on the CPU (2-rank FSDP on gloo) for TorchTitan's own llama3, and the
[optimizer] validation. Muon on motif2 across every parallel layout, with MuonClip and resume, is the composition
matrix (tests/integration/test_composition_matrix.py)."""


import pytest
from torchtitan.config import ConfigManager

from motif_titan.optim.builder import validate_muon_config


def _optimizer_config(*cli):
    return ConfigManager().parse_args(["--job.custom_config_module", "motif_titan.job_config", *cli]).optimizer


@pytest.mark.parametrize("cli,message", [
    (["--optimizer.name", "Lion"], "optimizer.name = 'Lion'; allowed: ['DistributedMuon', 'Muon', 'ParallelMuon', "
                                   "'AdamW', 'Adam']"),
    (["--optimizer.name", "ParallelMuon", "--optimizer.ns_coefficients", "kimi"],
     "optimizer.ns_coefficients = 'kimi'; allowed: ['keller', 'motif', 'polar_express']"),
    (["--optimizer.name", "ParallelMuon", "--optimizer.assignment", "random"],
     "optimizer.assignment = 'random'; allowed: ['flops_round_robin', 'lpt', 'round_robin']"),
    (["--optimizer.name", "Muon", "--optimizer.chunk_size", "0"], "optimizer.chunk_size = 0; allowed: >= 1"),
    (["--optimizer.name", "Muon", "--optimizer.adjust_lr", "kimi"],
     "optimizer.adjust_lr = 'kimi'; allowed: ['match_rms_adamw', 'original']"),
])
def test_bad_muon_config_names_the_field(cli, message):
    with pytest.raises(ValueError) as error:
        validate_muon_config(_optimizer_config(*cli))
    assert str(error.value) == message


def test_bad_muonclip_values_name_the_field():
    with pytest.raises(ValueError, match=r"optimizer.qk_clip_threshold = -1.0; allowed: 0 \(off\) or > 0"):
        validate_muon_config(_optimizer_config("--optimizer.name", "ParallelMuon",
                                               "--optimizer.qk_clip_threshold", "-1"))
    with pytest.raises(ValueError, match=r"optimizer.qk_clip_alpha = 1.5; allowed: 0 <= qk_clip_alpha <= 1"):
        validate_muon_config(_optimizer_config("--optimizer.name", "ParallelMuon", "--optimizer.qk_clip_alpha", "1.5"))


