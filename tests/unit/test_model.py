"""The Motif-2 model as a whole: flavors, parameter counts, FLOPs, HF adapter, config validation."""

import dataclasses
import re

import pytest
import torch
from torchtitan.config import ConfigManager

import motif_titan
from motif_titan.infra.job_rules import (check_converters, check_expert_parallel, check_pipeline_parallel,
                                         check_tensor_parallel)
from motif_titan.model import Motif2Model, Motif2ModelArgs, Motif2StateDictAdapter, motif2_args

from helpers.jobs import parse_debug_job as _job

HF_NAMES_PER_LAYER = {
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "self_attn.lambda_q1", "self_attn.lambda_k1", "self_attn.lambda_q2", "self_attn.lambda_k2",
    "self_attn.subln.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    "mlp.act_fn.weight", "mlp.act_fn.bias", "input_layernorm.weight", "post_attention_layernorm.weight",
}


def _meta_model(flavor: str) -> Motif2Model:
    with torch.device("meta"):
        return Motif2Model(motif2_args[flavor])


@pytest.mark.parametrize("flavor,count", [
    ("12.7B", 12_703_860_896),  # report Table 1 shapes, spec/model.md
    ("2.6B", 2_597_218_432),  # 32 x 67,113,732 + tied 219,520 x 2048 embedding + final norm
    ("1B", 1_224_816_704),  # 16 x 68,162,308 + untied 32,768 x 2048 embedding and head + final norm
    ("12.7B_flex_attn", 12_703_860_896),
    ("debugmodel", 5_311_504),  # 4 x 1,065,668 + 2 x 2048 x 256 + final norm
])
def test_flavor_parameter_counts(flavor, count):
    model = _meta_model(flavor)
    nparams, _ = motif2_args[flavor].get_nparams_and_flops(model, seq_len=1024)
    assert nparams == count


def test_12_7b_shapes_match_report():
    layer = _meta_model("12.7B").layers["0"]
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes["attention.wq.weight"] == (5120, 4096)
    assert shapes["attention.wk.weight"] == shapes["attention.wv.weight"] == (2048, 4096)
    assert shapes["attention.wo.weight"] == (4096, 8192)
    assert shapes["attention.subln.weight"] == (256,)
    assert shapes["feed_forward.w1.weight"] == (16384, 4096)
    assert shapes["feed_forward.poly_norm.weight"] == (3,)
    args = motif2_args["12.7B"]
    assert (args.gda_ratio, args.n_signal_heads, args.rope_theta) == (4, 32, 1e6)


def test_flavor_ratios_and_tying():
    assert motif2_args["debugmodel"].gda_ratio == 4 and motif2_args["debugmodel"].n_noise_heads == 2
    assert motif2_args["2.6B"].gda_ratio == 1 and motif2_args["2.6B"].rope_theta == 500_000
    tied = _meta_model("2.6B")
    assert tied.output.weight is tied.tok_embeddings.weight
    untied = _meta_model("12.7B")
    assert untied.output.weight is not untied.tok_embeddings.weight


def test_flops_count_gda_attention_and_the_head():
    args = motif2_args["12.7B"]
    seq = 4096
    _, flops = args.get_nparams_and_flops(_meta_model("12.7B"), seq)
    non_embedding = 12_703_860_896 - 219_520 * 4096
    # 40 q heads x (QK^T with d = 128 + PV with d_v = 256), forward 2 FLOPs per MAC, x3 for fwd + bwd
    attention = 3 * 40 * 40 * (2 * 128 + 2 * 256) * seq
    assert flops == 6 * non_embedding + attention
    # tied head still costs its matmul
    args26 = motif2_args["2.6B"]
    _, flops26 = args26.get_nparams_and_flops(_meta_model("2.6B"), seq)
    assert flops26 == 6 * (2_597_218_432 - 219_520 * 2048 + 219_520 * 2048) + 3 * 32 * 16 * 768 * seq


def _small_model(tied: bool) -> Motif2Model:
    args = dataclasses.replace(motif2_args["debugmodel"], n_layers=2, enable_weight_tying=tied)
    torch.manual_seed(0)
    model = Motif2Model(args)
    with torch.no_grad():
        model.init_weights()
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("tied", [False, True])
def test_hf_adapter_round_trip_is_exact(tied):
    model = _small_model(tied)
    adapter = Motif2StateDictAdapter(model.model_args, None)
    native = model.state_dict()
    hf = adapter.to_hf(native)
    expected = {f"model.layers.{i}.{n}" for i in range(2) for n in HF_NAMES_PER_LAYER}
    expected |= {"model.embed_tokens.weight", "model.norm.weight"} | (set() if tied else {"lm_head.weight"})
    assert set(hf) == expected
    back = adapter.from_hf(hf)
    assert set(back) == set(native)
    for key in native:
        assert torch.equal(back[key], native[key]), key

    clone = Motif2Model(model.model_args)
    clone.load_state_dict(back)
    tokens = torch.randint(0, model.model_args.vocab_size, (2, 16))
    assert torch.equal(clone(tokens), model(tokens))


def test_hf_adapter_rejects_unknown_keys():
    adapter = Motif2StateDictAdapter(motif2_args["debugmodel"], None)
    with pytest.raises(KeyError, match="model.layers.0.self_attn.q_norm.weight"):
        adapter.from_hf({"model.layers.0.self_attn.q_norm.weight": torch.zeros(1)})
    assert adapter.from_hf({"model.layers.3.self_attn.rotary_emb.inv_freq": torch.zeros(1)}) == {}


def test_registered_train_spec():
    from torchtitan.protocols.train_spec import get_train_spec

    spec = get_train_spec("motif2")
    assert spec.model_cls is Motif2Model and spec.model_args is motif2_args
    assert spec.state_dict_adapter is Motif2StateDictAdapter
    import importlib

    importlib.reload(motif_titan)  # registering again must not raise
    assert get_train_spec("motif2").model_cls is Motif2Model


def test_custom_config_module_is_accepted():
    cfg = ConfigManager().parse_args(["--job.custom_config_module", "motif_titan.job_config",
                                      "--model.name", "motif2"])
    assert cfg.model.name == "motif2"


# ---- bad input: clear errors that name the field -----------------------------------------------------------

def test_heads_that_do_not_divide_into_groups():
    with pytest.raises(ValueError, match=r"n_heads.*not a multiple of n_noise_heads = 3"):
        Motif2ModelArgs(n_heads=10, n_kv_heads=6, n_noise_heads=3)
    with pytest.raises(ValueError, match=r"n_kv_heads: must be 2 \* n_noise_heads = 4"):
        Motif2ModelArgs(n_heads=10, n_kv_heads=2, n_noise_heads=2)
    with pytest.raises(ValueError, match=r"attn_type: must be one of \('sdpa', 'flex'\)"):
        Motif2ModelArgs(attn_type="varlen")


def test_unknown_flavor_names_the_field():
    with pytest.raises(ValueError, match=re.escape("model.flavor = '7B' is not a motif2 flavor; allowed: ['12.7B'")):
        motif2_args["7B"]


def test_seq_len_above_flavor_max_names_the_field():
    args = dataclasses.replace(motif2_args["debugmodel"])
    with pytest.raises(ValueError, match=r"training.seq_len = 4096 exceeds the max_seq_len 2048"):
        args.update_from_config(_job("--training.seq_len", "4096"))
    args.update_from_config(_job("--training.seq_len", "2048"))
    assert args.max_seq_len == 2048


@pytest.mark.parametrize("flavor,degree,allowed", [("debugmodel", 4, "[1, 2]"), ("12.7B", 3, "[1, 2, 4, 8]"),
                                                    ("12.7B", 16, "[1, 2, 4, 8]")])
def test_tp_degree_that_splits_a_gda_group_names_the_field_and_allowed_degrees(flavor, degree, allowed):
    args = dataclasses.replace(motif2_args[flavor])
    with pytest.raises(ValueError, match=re.escape(f"parallelism.tensor_parallel_degree = {degree}: ") + ".*"
                       + re.escape(f"allowed: {allowed}")):
        check_tensor_parallel(args, _job("--model.flavor", flavor, "--training.seq_len", "256",
                                         "--parallelism.tensor_parallel_degree", str(degree)))
    check_tensor_parallel(args, _job("--model.flavor", flavor, "--training.seq_len", "256",
                                     "--parallelism.tensor_parallel_degree", "2"))


def test_tp_needs_a_sequence_that_splits_evenly():
    args = dataclasses.replace(motif2_args["debugmodel"])
    with pytest.raises(ValueError, match=r"training.seq_len = 129 must be a multiple of "
                                         r"parallelism.tensor_parallel_degree = 2"):
        check_tensor_parallel(args, _job("--training.seq_len", "129", "--parallelism.tensor_parallel_degree", "2"))


@pytest.mark.parametrize("cli,message", [
    (["--parallelism.expert_parallel_degree", "2"], "parallelism.expert_parallel_degree = 2: motif2 has no experts"),
    (["--model.flavor", "debugmodel_diffattn", "--parallelism.pipeline_parallel_degree", "2"],
     "parallelism.pipeline_parallel_degree = 2 with flavor 'debugmodel_diffattn', whose embedding and output head"),
])
def test_unsupported_parallelism_is_refused_naming_the_field(cli, message):
    args = dataclasses.replace(motif2_args["debugmodel_diffattn" if "debugmodel_diffattn" in cli else "debugmodel"])
    with pytest.raises(NotImplementedError, match=re.escape(message)):
        job = _job(*cli)
        check_pipeline_parallel(args, job)
        check_expert_parallel(job)


def test_pipeline_parallel_is_accepted_for_untied_flavors():
    args = dataclasses.replace(motif2_args["debugmodel"])
    check_pipeline_parallel(args, _job("--parallelism.pipeline_parallel_degree", "2"))


def test_converters_other_than_fp8_linears_are_refused():
    args = dataclasses.replace(motif2_args["debugmodel"])
    with pytest.raises(NotImplementedError, match=re.escape(
            "model.converters = ['quantize.linear.mx']: motif2 does not support ['quantize.linear.mx']; allowed: "
            "any of ['quantize.linear.float8', 'quantize.linear.float8_auto_filter'] (FP8 linears), or []")):
        check_converters(args, _job("--model.converters", "quantize.linear.mx"))
    check_converters(args, _job("--model.converters", "quantize.linear.float8"))


def test_fp8_with_tied_head_must_keep_the_head_in_bf16():
    args = dataclasses.replace(motif2_args["debugmodel_diffattn"])
    with pytest.raises(ValueError, match=re.escape(
            "quantize.linear.float8.filter_fqns = []: motif2 flavor 'debugmodel' ties the output head")):
        check_converters(args, _job("--model.converters", "quantize.linear.float8"))
    check_converters(args, _job("--model.converters", "quantize.linear.float8",
                                "--quantize.linear.float8.filter_fqns", "output"))


class _EosTokenizer:
    eos_id = 1


@torch.no_grad()  # FlexAttention has no CPU backward; the forward is what the masks change
def test_flex_block_causal_blocks_attention_across_documents():
    sdpa_model = _small_model(tied=False)
    flex_args = dataclasses.replace(sdpa_model.model_args, attn_type="flex", attn_mask_type="block_causal")
    flex_model = Motif2Model(flex_args)
    flex_model.load_state_dict(sdpa_model.state_dict())
    torch.manual_seed(1)
    tokens = torch.randint(2, flex_args.vocab_size, (2, 48))  # no EOS: one document per row
    masks = flex_model.get_attention_masks(tokens, _EosTokenizer())
    torch.testing.assert_close(flex_model(tokens, attention_masks=masks), sdpa_model(tokens), rtol=1e-4, atol=1e-4)

    packed = tokens.clone()
    packed[:, 19] = _EosTokenizer.eos_id  # document 1 = tokens 0..19, document 2 = tokens 20..47
    out = flex_model(packed, attention_masks=flex_model.get_attention_masks(packed, _EosTokenizer()))
    # RoPE scores depend on relative positions only, so document 2 alone gives the same outputs
    torch.testing.assert_close(out[:, 20:], sdpa_model(packed[:, 20:]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, :20], sdpa_model(packed[:, :20]), rtol=1e-4, atol=1e-4)
    assert (out[:, 20:] - sdpa_model(packed)[:, 20:]).abs().max() > 1e-2  # without the mask it would differ


def test_sdpa_model_refuses_attention_masks():
    model = _small_model(tied=False)
    with pytest.raises(TypeError, match="attention masks are built for attn_type 'flex', not 'sdpa'"):
        model.get_attention_masks(torch.zeros(1, 4, dtype=torch.long), _EosTokenizer())


def test_init_follows_motif_torchtitan_port():
    args = dataclasses.replace(motif2_args["debugmodel"], dim=512, ffn_hidden_dim=2048)
    torch.manual_seed(0)
    model = Motif2Model(args)
    with torch.no_grad():
        model.init_weights()

    def std(t):
        return t.detach().double().std().item()

    for layer_id in (0, 3):
        block = model.layers[str(layer_id)]
        depth_std = 0.02 / (2 * (layer_id + 1)) ** 0.5
        for w in (block.attention.wq, block.attention.wk, block.attention.wv, block.feed_forward.w1):
            assert std(w.weight) == pytest.approx(0.02, rel=0.03)
        for w in (block.attention.wo, block.feed_forward.w2, block.feed_forward.w3):
            assert std(w.weight) == pytest.approx(depth_std, rel=0.03)
        lambdas = torch.cat([block.attention.lambda_q1, block.attention.lambda_k1, block.attention.lambda_q2,
                             block.attention.lambda_k2])
        assert std(lambdas) == pytest.approx(0.1, rel=0.2)
        assert torch.equal(block.attention.subln.weight, torch.ones(2 * args.head_dim))
        assert torch.equal(block.attention_norm.weight, torch.ones(args.dim))
        assert block.feed_forward.poly_norm.weight.tolist() == pytest.approx([1 / 3] * 3)
        assert block.feed_forward.poly_norm.bias.item() == 0.0
    assert std(model.tok_embeddings.weight) == pytest.approx(1.0, rel=0.02)
    out_std = args.dim ** -0.5
    assert model.output.weight.abs().max().item() <= 3 * out_std
    assert std(model.output.weight) == pytest.approx(out_std * 0.986, rel=0.03)  # N(0, s) truncated at 3 s


def test_polynorm_backend_is_validated_and_reaches_the_ffn():
    with pytest.raises(ValueError, match=re.escape(
            "Motif2ModelArgs.polynorm_backend: must be one of ('auto', 'triton', 'torch'), got 'cuda'")):
        dataclasses.replace(motif2_args["debugmodel"], polynorm_backend="cuda")
    with torch.device("meta"):
        model = Motif2Model(dataclasses.replace(motif2_args["1B"], polynorm_backend="torch"))
    assert {block.feed_forward.poly_norm.backend for block in model.layers.values()} == {"torch"}
