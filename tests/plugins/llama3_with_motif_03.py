"""A TorchTitan 0.3 project as another team would write it: 0.3's own llama3 debug run (its ``model_registry`` and
``llama3_debugmodel`` config function), with motif_titan's ``MuonOptimizers`` (ParallelMuon) and
``CurriculumDataLoader`` (the curriculum of tests/configs/composition_curriculum.toml, with a batch ramp) set in the
config, and motif_titan's metrics processor and trainer (``MotifTrainer``: the batch ramp's micro-batches per step).
Launched by tests as ``--module llama3_with_motif_03 --config llama3_muon_curriculum`` (tests/plugins on
PYTHONPATH)."""

import dataclasses
import tomllib
from pathlib import Path

from torchtitan.components.loss import CrossEntropyLoss
from torchtitan.models.common.attention import FlexAttention, ScaledDotProductAttention
from torchtitan.models.llama3 import model_registry
from torchtitan.models.llama3.config_registry import llama3_debugmodel

from motif_titan.data.curriculum import CurriculumConfig
from motif_titan.data.text_dataloader import embedded_assets_dir
from motif_titan.titan03.dataloader import CurriculumDataLoader
from motif_titan.titan03.optimizer import MuonOptimizers
from motif_titan.titan03.trainer import ComponentMetrics, MotifTrainer

CURRICULUM = Path(__file__).resolve().parents[1] / "configs" / "composition_curriculum.toml"


def llama3_muon_curriculum() -> MotifTrainer.Config:
    base = llama3_debugmodel()
    curriculum = tomllib.loads(CURRICULUM.read_text())["curriculum"]
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)
              if f.init and f.name not in ("metrics", "dataloader")}
    config = MotifTrainer.Config(**{**fields, "metrics": ComponentMetrics.Config(log_freq=1,
                                                                                 disable_color_printing=True)})
    # flex attention has no CPU backward, and 0.3's llama3 offers no other backend that trains on a CPU: its flex
    # attention nodes are swapped for TorchTitan's own SDPA module (causal, no masks) in the config tree
    config.model_spec = model_registry("debugmodel")
    for _, _, parent, attr in list(config.model_spec.model.traverse(FlexAttention.Config)):
        if isinstance(attr, int):
            parent[attr] = ScaledDotProductAttention.Config()
        else:
            setattr(parent, attr, ScaledDotProductAttention.Config())
    config.hf_assets_path = str(embedded_assets_dir() / "tokenizer")
    config.loss = CrossEntropyLoss.Config()
    config.optimizer = MuonOptimizers.Config(name="ParallelMuon", lr=0.02, chunk_size=8)
    config.dataloader = CurriculumDataLoader.Config(
        curriculum=CurriculumConfig(**{**curriculum, "batch_ramp_start_tokens": 1024, "batch_ramp_steps": [2, 4]}),
        global_batch_size=16, document_positions=False)  # SDPA is causal over the whole row
    config.training.local_batch_size, config.training.seq_len, config.training.steps = 4, 128, 6
    config.training.global_batch_size = 16
    config.training.mixed_precision_param = "float32"
    config.lr_scheduler.warmup_steps = 2
    config.activation_checkpoint = None
    config.checkpoint.enable = False
    config.validator.enable = False
    config.debug.seed = 1234
    # 0.3's default spmd_types backend fails in fully_shard on gloo ranks for the stock llama3 too (parameters left
    # plain tensors); partial_dtensor is the backend 0.2.2's layouts correspond to
    config.parallelism.spmd_backend = "partial_dtensor"
    return config
