"""``python -m motif_titan.export`` and the HF description of a model (``motif_titan.model.hf_config``): an exported
folder loads back through TorchTitan's HF import with the same logits bit for bit, and a plain float64 reader of
the format (tests/helpers/motif_hf_reference.py, no motif_titan code) computes the same logits; every field
Motif's loaders read is written; bad input is refused naming the option. The folders a real training run saves
are exported in tests/integration/test_export_runs.py."""

import dataclasses
import json

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from torch.distributed.checkpoint import FileSystemWriter
from torchtitan.config import ConfigManager

from motif_titan.export.__main__ import main as export_main
from motif_titan.model import Motif2Model, Motif2ModelArgs, Motif2StateDictAdapter, motif2_args
from motif_titan.model.hf_config import ModelDescriptionError, from_hf_config, to_hf_config, write_model_args
from motif_titan.upscale.__main__ import run as upscale_run
from motif_titan.validate import validate_job_config
from helpers.launch import DEBUG_TOML
from helpers.hf_export import assert_round_trip, import_hf

def make_model(args: Motif2ModelArgs, seed: int = 0) -> Motif2Model:
    """A model with every parameter away from its init value (lambda vectors, norms and PolyNorm too)."""
    torch.manual_seed(seed)
    model = Motif2Model(args)
    with torch.no_grad():
        model.init_weights()
        for name, p in model.named_parameters():
            if "lambda" in name:
                p.normal_(0.0, 0.4)
            elif p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def save_step_folder(folder, model: Motif2Model, args: Motif2ModelArgs, describe: bool = True) -> str:
    """A DCP folder like a training run's step folder (keys = parameter FQNs, model_args.json beside them)."""
    dcp.save(model.state_dict(), storage_writer=FileSystemWriter(str(folder)), no_dist=True)
    if describe:
        write_model_args(folder, args)
    return str(folder)


@pytest.mark.parametrize("flavor", ["debugmodel", "debugmodel_diffattn"])
def test_export_round_trips_and_a_plain_reader_computes_the_same_logits(tmp_path, flavor):
    args = motif2_args[flavor]
    model = make_model(args)
    src = save_step_folder(tmp_path / "step-10", model, args)
    out = tmp_path / "hf"
    assert export_main(["--checkpoint", src, "--out", str(out), "--dtype", "fp32", "--hf-assets", "embedded",
                        "--max-shard-gb", "0.004"]) == 0
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                                          for i in range(1, len(shards) + 1)]
    assert all((out / s).stat().st_size <= 4_000_000 + 64_000 for s in shards[1:])  # the embedding is a shard alone
    assert {p.name for p in out.iterdir()} == {*shards, "model.safetensors.index.json", "config.json",
                                               "generation_config.json", "tokenizer.json", "tokenizer_config.json"}
    config = json.loads((out / "config.json").read_text())
    expected = {"architectures": ["MotifForCausalLM"], "hidden_act": "poly_norm", "num_attention_heads": args.n_heads,
                "num_key_value_heads": args.n_kv_heads, "head_dim": args.head_dim, "k_ratio": 1,
                "rms_norm_eps": args.norm_eps, "attn_rms_norm_eps": args.subln_eps, "rope_theta": args.rope_theta,
                "max_position_embeddings": args.max_seq_len, "tie_word_embeddings": args.enable_weight_tying,
                "vocab_size": 2048, "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float32"}
    assert {k: config[k] for k in expected} == expected
    # grouped layouts name their noise heads; for Differential-Transformer pairs the loaders' default is exact
    assert config.get("num_noise_heads") == (args.n_noise_heads if args.gda_ratio > 1 else None)
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 0, "eos_token_id": 1}
    assert_round_trip(model, out)


def test_bf16_export_keeps_the_lambda_vectors_in_float32(tmp_path):
    args = motif2_args["debugmodel"]
    src = save_step_folder(tmp_path / "step", make_model(args), args)
    assert export_main(["--checkpoint", src, "--out", str(tmp_path / "hf")]) == 0
    dtypes = {}
    for shard in (tmp_path / "hf").glob("*.safetensors"):
        with safe_open(shard, framework="pt") as f:
            dtypes.update({k: f.get_slice(k).get_dtype() for k in f.keys()})
    assert len(dtypes) == 4 * 16 + 3  # no rotary buffers, an untied head
    assert {k for k, d in dtypes.items() if d == "F32"} == {k for k in dtypes if ".lambda_" in k}
    assert {d for k, d in dtypes.items() if ".lambda_" not in k} == {"BF16"}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_an_upscaled_checkpoint_exports_with_the_fields_motif_loaders_need(tmp_path):
    """Motif-2.6B's config.json has no num_noise_heads (plain differential attention); upscaled to a GDA layout
    its config must say how many noise heads there are and head_dim, or loaders read half the q heads as noise
    heads. The upscaled model (a shape no flavor has) exports and round-trips like a trained one."""
    half = Motif2ModelArgs(dim=128, n_layers=2, n_heads=4, n_kv_heads=4, n_noise_heads=2, head_dim=32,
                           ffn_hidden_dim=512, vocab_size=2048, rope_theta=500_000.0, max_seq_len=2048,
                           enable_weight_tying=True)
    src = tmp_path / "src"
    src.mkdir()
    source_config = to_hf_config(half, {"auto_map": {"AutoConfig": "configuration_motif.MotifConfig"},
                                        "use_bias": False})
    del source_config["head_dim"]  # as a 2.6B config may lack it: 128 / 4 = 32 is what loaders derive
    assert "num_noise_heads" not in source_config
    (src / "config.json").write_text(json.dumps(source_config))
    (src / "configuration_motif.py").write_text("# remote code\n")
    from safetensors.torch import save_file
    model = make_model(half, seed=3)
    hf = Motif2StateDictAdapter(half, None).to_hf(model.state_dict())
    save_file({k: v.contiguous() for k, v in hf.items()}, str(src / "model.safetensors"))
    upscale_run(["--src", str(src), "--dst", str(tmp_path / "up"), "--width-factor", "3", "--signal-heads-per-group",
                 "4", "--format", "hf", "--dtype", "fp32"])
    config = json.loads((tmp_path / "up" / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_noise_heads"], config["head_dim"]) == (10, 2, 32)
    assert (config["hidden_size"], config["auto_map"], config["use_bias"]) == (384, source_config["auto_map"], False)
    assert (tmp_path / "up" / "configuration_motif.py").is_file()
    upscaled = from_hf_config(config, "config.json")
    assert upscaled.gda_ratio == 4 and upscaled.dim == 384 and not any(
        upscaled.dim == f.dim and upscaled.n_heads == f.n_heads for f in motif2_args.values())

    # the upscaled HF folder is itself a source of export (it describes itself through config.json)
    out = tmp_path / "exported"
    assert export_main(["--checkpoint", str(tmp_path / "up"), "--out", str(out), "--dtype", "fp32"]) == 0
    assert json.loads((out / "config.json").read_text()) == {**config, "torch_dtype": "float32"}
    assert_round_trip(import_hf(tmp_path / "up"), out)


def test_export_refuses_bad_input_naming_the_option(tmp_path, capsys):
    args = motif2_args["debugmodel"]
    model = make_model(args)
    described = save_step_folder(tmp_path / "described", model, args)
    bare = save_step_folder(tmp_path / "bare", model, args, describe=False)
    (tmp_path / "exists").mkdir()
    cases = [
        (["--checkpoint", described, "--out", str(tmp_path / "exists")], "--out", "exists"),
        (["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o1")], "--checkpoint", "no such"),
        (["--checkpoint", bare, "--out", str(tmp_path / "o2")], "--flavor", "does not describe its model"),
        (["--checkpoint", bare, "--out", str(tmp_path / "o3"), "--flavor", "12.7B"], "--flavor 12.7B",
         "dim: checkpoint 256, --flavor 12.7B 4096"),
        (["--checkpoint", bare, "--out", str(tmp_path / "o4"), "--flavor", "nope"], "--flavor", "allowed"),
        (["--checkpoint", described, "--out", str(tmp_path / "o5"), "--hf-assets", str(tmp_path / "none")],
         "--hf-assets", "no such directory"),
    ]
    for argv, option, words in cases:
        assert export_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "error:" in err and option in err and words in err, (argv, err)
    assert not any(p.name.startswith((".o", "o")) for p in tmp_path.iterdir())  # nothing written, no temporaries
    # a folder written by another tool, described on the command line
    assert export_main(["--checkpoint", bare, "--out", str(tmp_path / "ok"), "--flavor", "debugmodel",
                        "--dtype", "fp32"]) == 0
    assert_round_trip(model, tmp_path / "ok")


def test_hf_config_fields_loaders_would_guess_wrong_are_required_or_filled_as_they_fill_them():
    config = to_hf_config(motif2_args["12.7B"])
    assert (config["num_attention_heads"], config["num_noise_heads"], config["head_dim"]) == (40, 8, 128)
    without_head_dim = {k: v for k, v in config.items() if k != "head_dim"}
    with pytest.raises(ModelDescriptionError, match="no 'head_dim', and hidden_size 4096 is not a multiple of "
                                                    "num_attention_heads 40"):
        from_hf_config(without_head_dim, "config.json")
    two_six = {k: v for k, v in to_hf_config(motif2_args["2.6B"]).items() if k not in ("num_noise_heads", "head_dim")}
    assert from_hf_config(two_six, "c") == motif2_args["2.6B"]  # 16 / 2 noise heads, 2048 / 16 = 128 head_dim
    with pytest.raises(ModelDescriptionError, match="hidden_act = 'silu'"):
        from_hf_config({**config, "hidden_act": "silu"}, "config.json")


def _job(*argv):
    return ConfigManager().parse_args(["--job.config_file", str(DEBUG_TOML), "--checkpoint.enable", *argv])


def test_a_flavor_is_checked_against_the_checkpoint_it_loads_and_from_checkpoint_takes_its_shapes(tmp_path):
    wide = dataclasses.replace(motif2_args["debugmodel"], dim=512, ffn_hidden_dim=2048)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps(to_hf_config(wide)))
    with pytest.raises(ValueError, match=r"model.flavor = 'debugmodel' does not have the shapes of "
                                         rf"checkpoint.initial_load_path = '{hf}' \(config.json\): hidden_size: "
                                         r"checkpoint 512, flavor 256; intermediate_size: checkpoint 2048, flavor 1024"):
        validate_job_config(_job("--checkpoint.initial_load_path", str(hf), "--checkpoint.initial_load_in_hf"), 1)

    job = _job("--model.flavor", "from_checkpoint", "--checkpoint.initial_load_path", str(hf),
               "--checkpoint.initial_load_in_hf")
    validate_job_config(job, 1)
    args = motif2_args["from_checkpoint"]
    args.update_from_config(job)
    assert (args.dim, args.ffn_hidden_dim, args.n_heads, args.rope_theta) == (512, 2048, 10, 500_000.0)
    with pytest.raises(ValueError, match="set checkpoint.initial_load_path"):
        validate_job_config(_job("--model.flavor", "from_checkpoint"), 1)

    # a DCP step folder describes itself with model_args.json (native field names in the refusal)
    step = tmp_path / "step-5"
    step.mkdir()
    write_model_args(step, dataclasses.replace(wide, norm_eps=1e-5))
    with pytest.raises(ValueError, match=r"\(model_args.json\): dim: checkpoint 512, flavor 256; ffn_hidden_dim: "
                                         r"checkpoint 2048, flavor 1024"):
        validate_job_config(_job("--checkpoint.initial_load_path", str(step)), 1)
    args = motif2_args["from_checkpoint"]
    args.update_from_config(_job("--model.flavor", "from_checkpoint", "--checkpoint.initial_load_path", str(step)))
    assert (args.dim, args.norm_eps, args.attn_type) == (512, 1e-5, "sdpa")
