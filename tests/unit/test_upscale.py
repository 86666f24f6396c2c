"""The upscaler keeps the source model's function: tiny random Motif-2 models go through the CLI (HF safetensors
in; DCP and HF out; DCP in for a second round) and the upscaled model, built from the written files, must give
the source's logits. Plus the 2.6B -> 12.7B plan, the pieces of each step, and bad input."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from motif_titan.model import Motif2Model, Motif2ModelArgs, Motif2StateDictAdapter, lambda_init_for_layer, motif2_args
from motif_titan.model.state_dict_adapter import TO_HF, split_layer_index
from motif_titan.upscale import UPSCALE_RULES, UpscaleSpec, depth_layer_map, plan_upscale, shift_lambda_vectors
from motif_titan.upscale import upscaler
from motif_titan.upscale.__main__ import main, run
from motif_titan.checkpoint_io import CheckpointReader, expected_shapes, infer_model_args, open_checkpoint
from motif_titan.upscale.hypercloning import hyperclone_linear, noise_generator
from motif_titan.upscale.plan import TargetLayer, count_parameters

# A Motif-2.6B look-alike, tiny: plain differential attention (1 signal head per group), tied embeddings,
# 8 layers so that +25% depth (8 -> 10) moves layers 4..7 to new indices.
SOURCE = Motif2ModelArgs(dim=16, n_layers=8, n_heads=4, n_kv_heads=4, n_noise_heads=2, head_dim=4,
                         ffn_hidden_dim=32, vocab_size=40, max_seq_len=32, enable_weight_tying=True)
TOKENS = torch.randint(0, SOURCE.vocab_size, (2, 9), generator=torch.Generator().manual_seed(7))


def random_model(args: Motif2ModelArgs, seed: int = 0) -> Motif2Model:
    """A float64 model with every parameter random (norm, subln and PolyNorm weights away from their init, so
    tiling mistakes show)."""
    torch.manual_seed(seed)
    model = Motif2Model(args)
    with torch.no_grad():
        model.init_weights()
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model.double()


def save_hf(model: Motif2Model, args: Motif2ModelArgs, directory: Path) -> Path:
    directory.mkdir()
    hf = Motif2StateDictAdapter(args, None).to_hf(model.state_dict())
    save_file({k: v.contiguous() for k, v in hf.items()}, str(directory / "model.safetensors"))
    return directory


def load_written(directory: Path, dtype: torch.dtype) -> Motif2Model:
    """The model a checkpoint written by the CLI describes, built from its own files."""
    reader = open_checkpoint(directory)
    args = infer_model_args(reader)
    model = Motif2Model(args).to(dtype)
    state = reader.get_many(list(reader.shapes()))
    if args.enable_weight_tying:
        state.setdefault("output.weight", state["tok_embeddings.weight"])
    model.load_state_dict(state, strict=True)
    return model


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    model = random_model(SOURCE)
    return model, save_hf(model, SOURCE, tmp_path_factory.mktemp("src") / "hf")


CASES = {
    "width_x2": ["--width-factor", "2"],
    "width_x3": ["--width-factor", "3"],
    "heads_1_to_4": ["--signal-heads-per-group", "4"],
    "depth_plus_25pct": ["--num-layers", "10"],
    "all_composed": ["--width-factor", "2", "--signal-heads-per-group", "4", "--num-layers", "10"],
    "all_composed_noisy": ["--width-factor", "3", "--signal-heads-per-group", "2", "--num-layers", "16",
                           "--noise-snr-db", "10"],
}
TOLERANCE = {"fp64": 1e-10, "fp32": 1e-4}


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
@pytest.mark.parametrize("fmt", ["dcp", "hf"])
@pytest.mark.parametrize("case", list(CASES))
def test_cli_upscale_keeps_the_logits(source, tmp_path, monkeypatch, case, fmt, dtype):
    model, src = source
    monkeypatch.setattr(upscaler, "ROW_CHUNK", 16)  # vocab 40: embedding and head cloned in 3 row chunks
    torch_dtype = {"fp64": torch.float64, "fp32": torch.float32}[dtype]
    summary = run(["--src", str(src), "--dst", str(tmp_path / "out"), "--format", fmt, "--dtype", dtype,
                   *CASES[case]])
    upscaled = load_written(tmp_path / "out", torch_dtype)
    reference = copy.deepcopy(model).to(torch_dtype)(TOKENS)
    assert rel_error(upscaled(TOKENS), reference) <= TOLERANCE[dtype]
    # the CLI's own streamed float64 measurement of the written weights agrees
    assert summary["logits_drift"] <= (1e-12 if dtype == "fp64" else 1e-6)

    args = upscaled.model_args
    spec = UpscaleSpec(**summary["spec"])
    width, layers = spec.width_factor, spec.num_layers or SOURCE.n_layers
    assert (args.dim, args.ffn_hidden_dim, args.n_layers) == (16 * width, 32 * width, layers)
    assert args.n_noise_heads == 2 and args.n_kv_heads == 4
    assert args.gda_ratio == (spec.signal_heads_per_group or 1)
    assert args.enable_weight_tying == (width == 1)
    written = json.loads((tmp_path / "out" / "upscale.json").read_text())
    assert written["source_format"] == "hf"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_dcp_output_upscales_again_from_dcp(source, tmp_path):
    """DCP in: a width x2, ratio 4 DCP output grown again to ratio 8 and 12 layers (8 -> 12 shifts layers) still
    computes the original source's function."""
    model, src = source
    assert main(["--src", str(src), "--dst", str(tmp_path / "a"), "--width-factor", "2",
                 "--signal-heads-per-group", "4", "--dtype", "fp64"]) == 0
    summary = run(["--src", str(tmp_path / "a"), "--dst", str(tmp_path / "b"), "--signal-heads-per-group", "8",
                   "--num-layers", "12", "--format", "hf", "--dtype", "fp64"])
    assert summary["source_format"] == "dcp"
    upscaled = load_written(tmp_path / "b", torch.float64)
    assert upscaled.model_args.gda_ratio == 8 and upscaled.model_args.n_layers == 12
    assert rel_error(upscaled(TOKENS), model(TOKENS)) <= 1e-10


def test_bf16_output_reports_its_drift(source, tmp_path, capsys):
    _, src = source
    summary = run(["--src", str(src), "--dst", str(tmp_path / "out"), "--width-factor", "2"])
    assert 1e-5 < summary["logits_drift"] < 5e-2  # bf16 rounding: measured, not zero
    assert f"{summary['logits_drift']:.3e}" in capsys.readouterr().out
    reader = open_checkpoint(tmp_path / "out")
    assert reader.get("layers.0.attention.wq.weight").dtype == torch.bfloat16
    assert reader.get("layers.0.attention.lambda_q1").dtype == torch.float32  # kept as the model holds it


# --- the 2.6B -> 12.7B plan -------------------------------------------------------------------------------------

def test_plan_of_2_6b_gives_exactly_the_12_7b_flavor():
    plan = plan_upscale(motif2_args["2.6B"], UpscaleSpec(width_factor=2, signal_heads_per_group=4, num_layers=40))
    target, flavor = plan.target, motif2_args["12.7B"]
    for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "n_noise_heads", "head_dim", "ffn_hidden_dim",
                  "vocab_size", "enable_weight_tying", "norm_eps", "subln_eps", "polynorm_eps"):
        assert getattr(target, field) == getattr(flavor, field), field
    assert count_parameters(target) == 12_703_860_896
    assert [layer.index for layer in plan.layers if layer.identity] == [4, 9, 14, 19, 24, 29, 34, 39]


def test_cli_dry_run_prints_the_12_7b_plan_and_writes_nothing(tmp_path, capsys):
    assert main(["--src", "2.6B", "--dst", str(tmp_path / "out"), "--dry-run", "--width-factor", "2",
                 "--signal-heads-per-group", "4", "--num-layers", "40"]) == 0
    out = capsys.readouterr().out
    assert "2,597,218,432" in out and "12,703,860,896" in out
    assert "target shapes match flavor: 12.7B" in out
    assert "wo                             2048x2048       4096x8192" in out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_on_a_checkpoint_reads_its_shapes(source, capsys):
    _, src = source
    assert main(["--src", str(src), "--dry-run", "--width-factor", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{count_parameters(SOURCE):,}" in out and "1. width x2" in out


# --- the steps, one by one ----------------------------------------------------------------------------------------

def test_depth_map_inserts_identity_copies_after_every_split_th_layer():
    layers = depth_layer_map(8, 10)
    assert [(la.index, la.source, la.identity) for la in layers] == [
        (0, 0, False), (1, 1, False), (2, 2, False), (3, 3, False), (4, 3, True),
        (5, 4, False), (6, 5, False), (7, 6, False), (8, 7, False), (9, 7, True)]
    assert [la.source for la in depth_layer_map(4, 8)] == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("old,new", [(3, 4), (0, 9), (5, 5), (1, 30)])
def test_shift_lambda_vectors_keeps_the_full_lambda(old, new):
    g = torch.Generator().manual_seed(old * 31 + new)
    q1, k1, q2, k2 = (0.1 * torch.randn(8, generator=g, dtype=torch.float64) for _ in range(4))

    def full(vectors, layer):
        a, b, c, d = vectors
        return math.exp(a @ b) - math.exp(c @ d) + lambda_init_for_layer(layer)

    shifted = shift_lambda_vectors(q1, k1, q2, k2, lambda_init_for_layer(old), lambda_init_for_layer(new))
    assert full(shifted, new) == pytest.approx(full((q1, k1, q2, k2), old), abs=1e-14)
    zero = torch.zeros(8, dtype=torch.float64)  # degenerate vectors still get a solution
    shifted = shift_lambda_vectors(zero, zero, zero, zero, lambda_init_for_layer(old), lambda_init_for_layer(new))
    assert full(shifted, new) == pytest.approx(full((zero,) * 4, old), abs=1e-14)


def _logits(args: Motif2ModelArgs, state: dict) -> torch.Tensor:
    model = Motif2Model(args).double()
    model.load_state_dict(state, strict=True)
    return model(TOKENS)


class StateDictReader(CheckpointReader):
    """A source held in memory, for the Upscaler without files."""

    path, format, hf_config = Path("in-memory"), "memory", {}

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: tuple(t.shape) for key, t in self.state.items()}

    def get(self, key: str) -> torch.Tensor:
        return self.state[key]


def _upscaled(state: dict, source: Motif2ModelArgs, spec: UpscaleSpec) -> tuple[Motif2ModelArgs, dict]:
    plan = plan_upscale(source, spec)
    up = upscaler.Upscaler(plan, StateDictReader(state), torch.float64)
    return plan.target, {key: up.tensor(key) for key in up.shapes}


def test_step_functions_compose_on_state_dicts(monkeypatch):
    """The Upscaler (not the CLI's files) gives the same function step after step: width, then heads, then depth;
    and depth expansion without the lambda / subln compensation would not, which is what the logits tests guard."""
    model = random_model(SOURCE)
    state = dict(model.state_dict())
    reference = model(TOKENS)
    wide_args, wide = _upscaled(state, SOURCE, UpscaleSpec(width_factor=2))
    assert (wide_args.dim, wide_args.enable_weight_tying) == (32, False)
    assert rel_error(_logits(wide_args, wide), reference) <= 1e-10
    grown_args, grown = _upscaled(wide, wide_args, UpscaleSpec(signal_heads_per_group=3))
    assert grown_args.n_heads == 8
    assert rel_error(_logits(grown_args, grown), reference) <= 1e-10
    deep_args, deep = _upscaled(grown, grown_args, UpscaleSpec(num_layers=16))
    assert rel_error(_logits(deep_args, deep), reference) <= 1e-10

    # LLaMA-Pro copies without re-solving lambda and subln for the new layer indices
    monkeypatch.setattr(TargetLayer, "lambda_init_shift", property(lambda layer: (0.5, 0.5)))
    _, naive = _upscaled(grown, grown_args, UpscaleSpec(num_layers=16))
    assert rel_error(_logits(deep_args, naive), reference) > 1e-3


def test_every_parameter_has_one_upscale_rule_and_one_hf_name(monkeypatch):
    """The model's state dict (meta device) names the parameters; the adapter and the rule table cover exactly
    those, and a parameter without a rule is refused, named, before anything is read."""
    names = {split_layer_index(key)[1] for key in expected_shapes(SOURCE)}
    assert names == set(UPSCALE_RULES) == set(TO_HF)
    monkeypatch.delitem(UPSCALE_RULES, "layers.{}.feed_forward.poly_norm.bias")
    with pytest.raises(ValueError, match=r"no upscale rule for the Motif-2 parameter "
                                         r"'layers\.\{\}\.feed_forward\.poly_norm\.bias'"):
        upscaler.Upscaler(plan_upscale(SOURCE, UpscaleSpec()), StateDictReader({}), torch.float32)


def test_noisy_hypercloning_blocks_differ_at_the_asked_snr_and_cancel():
    w = torch.randn(64, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for m in (2, 3):
        cloned = hyperclone_linear(w, m, m, noise_snr_db=10.0, generator=noise_generator(0, "w"))
        blocks = cloned.view(m * 64, m, 48).transpose(0, 1)  # input column blocks
        clean = (w / m).repeat(m, 1)
        noise = blocks - clean
        snr_db = 10 * math.log10(clean.square().mean().item() / noise.square().mean().item())
        assert snr_db == pytest.approx(10.0, abs=0.5)
        assert torch.allclose(blocks.sum(0), w.repeat(m, 1), rtol=0, atol=1e-13)  # copies still sum to W x
        assert not torch.equal(noise[0][:64], noise[0][64:128])  # fresh noise in every row block


# --- bad input: clear errors, nothing written ---------------------------------------------------------------------

@pytest.mark.parametrize("flags,message", [
    (["--width-factor", "1.5"], "argument --width-factor: must be an integer >= 1, got '1.5'"),
    (["--width-factor", "0"], "argument --width-factor: must be an integer >= 1, got '0'"),
    (["--num-layers", "-8"], "argument --num-layers: must be an integer >= 1, got '-8'"),
    (["--signal-heads-per-group", "two"], "argument --signal-heads-per-group: must be an integer >= 1, got 'two'"),
])
def test_non_integer_or_small_factors_are_rejected(source, tmp_path, capsys, flags, message):
    _, src = source
    with pytest.raises(SystemExit) as exit_info:
        main(["--src", str(src), "--dst", str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_spec_validates_when_used_as_a_library():
    with pytest.raises(ValueError, match=r"--width-factor = 2.0: must be an integer >= 1"):
        UpscaleSpec(width_factor=2.0)
    with pytest.raises(ValueError, match=r"--num-layers = 0: must be an integer >= 1"):
        UpscaleSpec(num_layers=0)


def _fails(argv, tmp_path, capsys) -> str:
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary left
    return capsys.readouterr().err


def test_unsupported_depth_names_the_allowed_layer_counts(source, tmp_path, capsys):
    _, src = source
    err = _fails(["--src", str(src), "--dst", str(tmp_path / "out"), "--num-layers", "11"], tmp_path, capsys)
    assert ("--num-layers = 11: LLaMA-Pro depth expansion inserts one identity block after every k-th of the 8 "
            "source layers (k dividing 8), so the target must be 8 + 8/k layers; allowed: [8, 9, 10, 12, 16]") in err
    err = _fails(["--src", str(src), "--dst", str(tmp_path / "out"), "--num-layers", "6"], tmp_path, capsys)
    assert "--num-layers = 6: LLaMA-Pro" in err


def test_head_counts_that_cannot_be_grown(source, tmp_path, capsys):
    _, src = source
    assert main(["--src", str(src), "--dst", str(tmp_path / "r2"), "--signal-heads-per-group", "2"]) == 0
    for bad in ("3", "1"):
        err = _fails(["--src", str(tmp_path / "r2"), "--dst", str(tmp_path / "out"),
                      "--signal-heads-per-group", bad], tmp_path, capsys)
        assert (f"--signal-heads-per-group = {bad}: GDA head growth copies each of the source's 2 signal heads "
                "per group the same number of times, so it must be a multiple of 2 (allowed: 2, 4, 6, ...)") in err


def test_a_source_that_is_not_motif2_is_rejected(source, tmp_path, capsys):
    llama = tmp_path / "llama"
    llama.mkdir()
    save_file({"model.embed_tokens.weight": torch.zeros(8, 4), "model.layers.0.self_attn.q_proj.weight":
               torch.zeros(4, 4), "model.layers.0.self_attn.q_norm.weight": torch.zeros(4)},
              str(llama / "model.safetensors"))
    err = _fails(["--src", str(llama), "--dst", str(tmp_path / "out")], tmp_path, capsys)
    assert (f"--src {llama} is not a Motif-2 checkpoint: tensor 'model.layers.0.self_attn.q_norm.weight' in "
            "model.safetensors has no Motif-2 name") in err

    no_lambda = tmp_path / "no_lambda"
    no_lambda.mkdir()
    save_file({"model.embed_tokens.weight": torch.zeros(8, 4), "model.layers.0.self_attn.q_proj.weight":
               torch.zeros(4, 4)}, str(no_lambda / "model.safetensors"))
    err = _fails(["--src", str(no_lambda), "--dst", str(tmp_path / "out")], tmp_path, capsys)
    assert "is not a Motif-2 checkpoint: missing 'layers.0.attention.lambda_q1' " \
           "('model.layers.0.self_attn.lambda_q1' in HF names)" in err

    err = _fails(["--src", str(tmp_path / "llama" / "model.safetensors"), "--dst", str(tmp_path / "out")],
                 tmp_path, capsys)
    assert "no such directory" in err


def test_an_existing_destination_is_kept_unless_overwrite(source, tmp_path, capsys):
    _, src = source
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    err = _fails(["--src", str(src), "--dst", str(dst), "--width-factor", "2"], tmp_path, capsys)
    assert f"--dst {dst} exists; pass --overwrite to replace it" in err
    assert (dst / "keep.txt").read_text() == "mine"
    assert main(["--src", str(src), "--dst", str(dst), "--width-factor", "2", "--overwrite"]) == 0
    assert not (dst / "keep.txt").exists() and (dst / ".metadata").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_while_writing_leaves_nothing_behind(source, tmp_path, monkeypatch):
    _, src = source
    calls = []
    real = upscaler.Upscaler.tensor

    def failing(self, key):
        calls.append(key)
        if len(calls) == 10:
            raise RuntimeError("disk full (simulated)")
        return real(self, key)

    monkeypatch.setattr(upscaler.Upscaler, "tensor", failing)
    for fmt in ("dcp", "hf"):
        calls.clear()
        with pytest.raises(RuntimeError, match="simulated"):
            run(["--src", str(src), "--dst", str(tmp_path / "out"), "--format", fmt])
        assert list(tmp_path.iterdir()) == []


