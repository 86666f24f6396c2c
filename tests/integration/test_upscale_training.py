"""An upscaled DCP checkpoint seeds a real TorchTitan run of the target flavor through
``checkpoint.initial_load_path``, and trains: the first step's loss is the source model's loss on that batch."""

import json

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchtitan.config import ConfigManager

from motif_titan.data import build_text_dataloader, build_tokenizer
from motif_titan.model import Motif2Model, Motif2ModelArgs, Motif2StateDictAdapter
from motif_titan.model.hf_config import to_hf_config
from motif_titan.upscale.__main__ import run
from helpers.launch import DEBUG_TOML, FAST, run_training

# Half of `debugmodel` in width, heads and depth, as Motif-2.6B is of 12.7B: plain differential attention
# (1 signal head per group), tied embeddings, 2 layers. Width x2, 1 -> 4 signal heads per group and 2 -> 4 layers
# (an identity copy after each layer, so layer 1 moves to index 2) give exactly `debugmodel`'s shapes.
HALF_DEBUGMODEL = Motif2ModelArgs(dim=128, n_layers=2, n_heads=4, n_kv_heads=4, n_noise_heads=2, head_dim=32,
                                  ffn_hidden_dim=512, vocab_size=2048, rope_theta=500_000.0, max_seq_len=2048,
                                  enable_weight_tying=True)


def first_batch(seq_overrides: list[str]):
    job_config = ConfigManager().parse_args(["--job.config_file", str(DEBUG_TOML), *seq_overrides])
    dataloader = build_text_dataloader(dp_world_size=1, dp_rank=0, tokenizer=build_tokenizer(job_config),
                                       job_config=job_config)
    inputs, labels = next(iter(dataloader))
    return inputs["input"], labels


def test_upscaled_dcp_seeds_a_torchtitan_run_of_the_target_flavor(tmp_path):
    torch.manual_seed(0)
    source = Motif2Model(HALF_DEBUGMODEL)
    with torch.no_grad():
        source.init_weights()
        source.tok_embeddings.weight.mul_(4.0)  # sharper logits: a loss no fresh init would log
    src = tmp_path / "src"
    src.mkdir()
    hf = Motif2StateDictAdapter(HALF_DEBUGMODEL, None).to_hf(source.state_dict())
    save_file({k: v.contiguous() for k, v in hf.items()}, str(src / "model.safetensors"))
    summary = run(["--src", str(src), "--dst", str(tmp_path / "upscaled"), "--width-factor", "2",
                   "--signal-heads-per-group", "4", "--num-layers", "4", "--format", "dcp", "--dtype", "fp32"])
    assert summary["target_shapes_match_flavor"] == "debugmodel"

    losses, log = run_training(tmp_path / "run", 1, "--checkpoint.enable", "--checkpoint.initial_load_path",
                               str(tmp_path / "upscaled"), "--training.steps", "3", return_log=True)
    assert f"Loading the checkpoint from {tmp_path / 'upscaled'}" in log
    assert sorted(losses) == [1, 2, 3]

    tokens, labels = first_batch(FAST)
    with torch.no_grad():
        logits = source.double()(tokens)
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()
    assert abs(float(losses[1]) - expected) < 1e-4, (losses[1], expected)
    assert expected > 9.0  # far from the ~8.1 a freshly initialized debugmodel starts at


def test_an_upscaled_hf_checkpoint_of_no_flavor_shape_trains_from_a_toml_that_points_at_it(tmp_path):
    """Width x2 of HALF_DEBUGMODEL (dim 256, 4 heads, 2 layers) is no registered flavor: a TOML with
    ``flavor = "from_checkpoint"`` and the HF folder as ``initial_load_path`` trains it, no code written, and the
    first loss is the source's on that batch."""
    torch.manual_seed(0)
    source = Motif2Model(HALF_DEBUGMODEL)
    with torch.no_grad():
        source.init_weights()
        source.tok_embeddings.weight.mul_(2.0)
    src = tmp_path / "src"
    src.mkdir()
    hf = Motif2StateDictAdapter(HALF_DEBUGMODEL, None).to_hf(source.state_dict())
    save_file({k: v.contiguous() for k, v in hf.items()}, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps(to_hf_config(HALF_DEBUGMODEL)))  # RoPE theta, eps: as on the Hub
    summary = run(["--src", str(src), "--dst", str(tmp_path / "upscaled"), "--width-factor", "2", "--format", "hf",
                   "--dtype", "fp32"])
    assert summary["target_shapes_match_flavor"] is None

    toml = tmp_path / "upscaled.toml"
    toml.write_text(DEBUG_TOML.read_text().replace('flavor = "debugmodel"', 'flavor = "from_checkpoint"')
                    .replace("[checkpoint]\nenable = false", f"[checkpoint]\nenable = true\ninitial_load_path = "
                             f"\"{tmp_path / 'upscaled'}\"\ninitial_load_in_hf = true"))
    losses = run_training(tmp_path / "run", 1, "--training.steps", "2", config_file=toml)
    assert sorted(losses) == [1, 2]
    built = json.loads((tmp_path / "run" / "model_args.json").read_text())  # what the trainer built
    # (hypercloning unties the head: it scales the embedding's copies by 1 / width factor)
    assert (built["dim"], built["n_layers"], built["n_heads"], built["enable_weight_tying"]) == (256, 2, 4, False)

    tokens, labels = first_batch(FAST)
    with torch.no_grad():
        logits = source.double()(tokens)
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()
    assert abs(float(losses[1]) - expected) < 1e-4, (losses[1], expected)
    assert expected > 9.0
