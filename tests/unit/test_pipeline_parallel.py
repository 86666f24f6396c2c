"""Pipeline parallelism for Motif-2: the split of the model into stages. Trained through TorchTitan's pipelining,
PP 2 x FSDP 2 (1F1B) and PP 2 x TP 2 (Interleaved1F1B, two stages per rank), with every optimizer and a resume,
are rows of the composition matrix (tests/integration/test_composition_matrix.py).
"""

from types import SimpleNamespace

import pytest

from motif_titan.infra.job_rules import check_pipeline_parallel
from motif_titan.model import motif2_args


def test_pipeline_split_names_unknown_modules():
    job = SimpleNamespace(model=SimpleNamespace(flavor="debugmodel"),
                          parallelism=SimpleNamespace(pipeline_parallel_degree=2,
                                                      module_fqns_per_model_part=[["tok_embeddings", "layers.0"],
                                                                                  ["layers.9", "lm_head"]]))
    with pytest.raises(ValueError, match=r"module_fqns_per_model_part names \['layers.9', 'lm_head'\], which "
                                         r"motif2 flavor 'debugmodel' does not have; allowed: tok_embeddings, "
                                         r"layers.0 .. layers.3, norm, output"):
        check_pipeline_parallel(motif2_args["debugmodel"], job)
