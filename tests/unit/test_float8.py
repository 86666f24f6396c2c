"""FP8 row-wise settings (motif_titan.infra.float8): which linears the converters swap, for motif2 and for
TorchTitan's own llama3, and a CPU training run with FP8 linears (torchao's emulation mode)."""

import re

import pytest
import torch
from torch import nn
from torchtitan.config import ConfigManager
from torchtitan.models.llama3 import Transformer as Llama3, llama3_args
from torchtitan.protocols.model_converter import build_model_converters

import motif_titan  # noqa: F401  registers the converter
from motif_titan.model import Motif2Model, motif2_args


def _converted(model_cls, args, *cli):
    job = ConfigManager().parse_args(["--quantize.linear.float8.emulate", *cli])
    with torch.device("meta"):
        model = model_cls(args)
    build_model_converters(job, parallel_dims=None).convert(model)
    fp8 = {name for name, m in model.named_modules() if type(m).__name__ == "Float8Linear"}
    bf16 = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    return fp8, bf16


def _per_layer(names, layer=0):
    prefix = f"layers.{layer}."
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix))


def test_auto_filter_keeps_small_linears_and_head_in_bf16_in_12_7b():
    fp8, bf16 = _converted(Motif2Model, motif2_args["12.7B"], "--model.converters",
                           "quantize.linear.float8_auto_filter", "--quantize.linear.float8.recipe_name",
                           "rowwise_with_gw_hp", "--quantize.linear.float8.filter_fqns", "output")
    assert _per_layer(fp8, 7) == ["attention.wo", "attention.wq", "feed_forward.w1", "feed_forward.w2",
                                  "feed_forward.w3"]
    assert _per_layer(bf16, 7) == ["attention.wk", "attention.wv"]  # 2048 x 4096: below the row-wise thresholds
    assert "output" in bf16 and len(fp8) == 5 * 40


def test_auto_filter_works_on_torchtitan_llama3():
    fp8, bf16 = _converted(Llama3, llama3_args["8B"], "--model.converters", "quantize.linear.float8_auto_filter",
                           "--quantize.linear.float8.recipe_name", "rowwise", "--quantize.linear.float8.filter_fqns",
                           "output")
    assert _per_layer(fp8) == ["attention.wo", "attention.wq", "feed_forward.w1", "feed_forward.w2",
                               "feed_forward.w3"]
    assert _per_layer(bf16) == ["attention.wk", "attention.wv"]  # 1024 x 4096
    assert "output" in bf16


def test_auto_filter_refuses_a_recipe_it_has_no_thresholds_for():
    with pytest.raises(ValueError, match=re.escape(
            "quantize.linear.float8.recipe_name = 'tensorwise'; allowed with "
            "'quantize.linear.float8_auto_filter': ['rowwise_with_gw_hp', 'rowwise']")):
        _converted(Motif2Model, motif2_args["debugmodel"], "--model.converters",
                   "quantize.linear.float8_auto_filter", "--quantize.linear.float8.recipe_name", "tensorwise")




def test_motif2_accepts_only_converters_torchtitan_can_build():
    # the one list motif2's job rules accept (motif_titan.infra.job_rules.check_converters) names registered ones
    from torchtitan.protocols.model_converter import _registry_model_converter_cls

    from motif_titan.infra.float8 import FLOAT8_CONVERTERS

    assert set(FLOAT8_CONVERTERS) <= set(_registry_model_converter_cls)
