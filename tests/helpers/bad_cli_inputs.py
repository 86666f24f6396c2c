"""The other commands' bad input: damaged upscale sources and bad pretokenize arguments (``BAD_INPUT_CASES``, their
files prepared by ``prepare_bad_inputs``), and the tiny Motif-2 HF source they are cut from (``write_tiny_hf_source``)."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from motif_titan.data import pretokenize as pretokenize_cli
from motif_titan.model import Motif2Model, Motif2ModelArgs, Motif2StateDictAdapter
from motif_titan.upscale import __main__ as upscale_cli


TINY = Motif2ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=4, n_noise_heads=2, head_dim=4, ffn_hidden_dim=32,
                       vocab_size=40, max_seq_len=32, enable_weight_tying=True)


def write_tiny_hf_source(directory: Path) -> Path:
    torch.manual_seed(0)
    model = Motif2Model(TINY)
    with torch.no_grad():
        model.init_weights()
    directory.mkdir(parents=True)
    hf = Motif2StateDictAdapter(TINY, None).to_hf(model.state_dict())
    save_file({k: v.contiguous() for k, v in hf.items()}, str(directory / "model.safetensors"))
    return directory


def prepare_bad_inputs(tmp: Path) -> None:
    """The files BAD_INPUT_CASES name, under ``tmp`` (substituted for ``{tmp}`` in their argv and messages)."""
    hf = write_tiny_hf_source(tmp / "hf")
    data = (hf / "model.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    for name, content in (("hf_cut_data", data[:-100]), ("hf_cut_header", data[:8 + header_len // 2]),
                          ("hf_bad_json", data[:8] + b"{" + b" " * (header_len - 1) + data[8 + header_len:]),
                          ("hf_tiny", data[:5]), ("hf_trailing", data + b"\0" * 8)):
        (tmp / name).mkdir()
        (tmp / name / "model.safetensors").write_bytes(content)
    assert upscale_cli.main(["--src", str(hf), "--dst", str(tmp / "dcp"), "--verify-tokens", "0"]) == 0
    for name in ("dcp_cut", "dcp_missing", "dcp_bad_metadata"):
        shutil.copytree(tmp / "dcp", tmp / name)
    cut = tmp / "dcp_cut" / "__0_0.distcp"
    cut.write_bytes(cut.read_bytes()[:100])
    (tmp / "dcp_missing" / "__0_3.distcp").unlink()
    metadata = tmp / "dcp_bad_metadata" / ".metadata"
    metadata.write_bytes(metadata.read_bytes()[:200])
    (tmp / "afile").write_text("a file, not a directory")
    (tmp / "exists").mkdir()
    (tmp / "body.jsonl").write_text(json.dumps({"body": "the text is under another field"}) + "\n")
    (tmp / "empty.jsonl").write_text("")
    assert pretokenize_cli.main(["--out", str(tmp / "shard"), str(tmp / "body.jsonl"), "--text-field", "body"]) == 0


UP, PRE, EX = "motif_titan.upscale", "motif_titan.data.pretokenize", "motif_titan.export"


# (description, argv of `python -m` (module first; {tmp} = the folder prepare_bad_inputs filled), message fragment)
BAD_INPUT_CASES = [
    ("upscale: safetensors shard cut in its data", [UP, "--src", "{tmp}/hf_cut_data", "--dst", "{tmp}/out"],
     "--src {tmp}/hf_cut_data/model.safetensors: truncated: its tensors need"),
    ("upscale: safetensors shard cut in its header", [UP, "--src", "{tmp}/hf_cut_header", "--dst", "{tmp}/out"],
     "--src {tmp}/hf_cut_header/model.safetensors: truncated or not safetensors: the header length says"),
    ("upscale: safetensors shorter than its header length", [UP, "--src", "{tmp}/hf_tiny", "--dst", "{tmp}/out"],
     "--src {tmp}/hf_tiny/model.safetensors: truncated or not safetensors: 5 bytes, fewer than the 8-byte header"),
    ("upscale: safetensors header not JSON", [UP, "--src", "{tmp}/hf_bad_json", "--dst", "{tmp}/out"],
     "--src {tmp}/hf_bad_json/model.safetensors: damaged safetensors header (not JSON"),
    ("upscale: safetensors with trailing bytes", [UP, "--src", "{tmp}/hf_trailing", "--dst", "{tmp}/out"],
     "--src {tmp}/hf_trailing/model.safetensors: damaged: 8 bytes after the last tensor's data"),
    ("upscale: truncated .distcp", [UP, "--src", "{tmp}/dcp_cut", "--dst", "{tmp}/out"],
     "--src {tmp}/dcp_cut/__0_0.distcp: truncated: 100 bytes, but .metadata places"),
    ("upscale: missing .distcp", [UP, "--src", "{tmp}/dcp_missing", "--dst", "{tmp}/out"],
     "--src {tmp}/dcp_missing/__0_3.distcp: missing: .metadata places"),
    ("upscale: truncated DCP .metadata", [UP, "--src", "{tmp}/dcp_bad_metadata", "--dst", "{tmp}/out"],
     "--src {tmp}/dcp_bad_metadata/.metadata: unreadable DCP metadata, the file may be truncated"),
    ("upscale: negative --verify-tokens", [UP, "--src", "{tmp}/hf", "--dst", "{tmp}/out", "--verify-tokens", "-5"],
     "argument --verify-tokens: must be an integer >= 0, got '-5'"),
    ("upscale: --dst inside a file", [UP, "--src", "{tmp}/hf", "--dst", "{tmp}/afile/out", "--verify-tokens", "0"],
     "--dst {tmp}/afile/out: {tmp}/afile is not a directory"),
    ("pretokenize: wrong text field", [PRE, "--out", "{tmp}/out", "{tmp}/body.jsonl"],
     "(--text-field 'text': pass the field that holds the text)"),
    ("pretokenize: --out inside a file", [PRE, "--out", "{tmp}/afile/shard", "{tmp}/body.jsonl", "--text-field",
                                          "body"],
     "--out {tmp}/afile/shard: {tmp}/afile is not a directory"),
    ("pretokenize: existing --out", [PRE, "--out", "{tmp}/exists", "{tmp}/body.jsonl", "--text-field", "body"],
     "--out {tmp}/exists exists; token shards are never overwritten"),
    ("pretokenize: missing --tokenizer directory", [PRE, "--out", "{tmp}/out", "--tokenizer", "{tmp}/nowhere",
                                                    "{tmp}/body.jsonl"],
     "--tokenizer '{tmp}/nowhere': no such directory"),
    ("pretokenize: a token shard as source", [PRE, "--out", "{tmp}/out", "{tmp}/shard"],
     "source '{tmp}/shard' is a token shard, already tokenized"),
    ("pretokenize: missing source", [PRE, "--out", "{tmp}/out", "{tmp}/nothing.jsonl"],
     "source '{tmp}/nothing.jsonl': no such file or directory"),
    ("pretokenize: empty source", [PRE, "--out", "{tmp}/out", "{tmp}/empty.jsonl"],
     "source '{tmp}/empty.jsonl': the source holds no documents"),
    ("export: safetensors shard cut in its data", [EX, "--checkpoint", "{tmp}/hf_cut_data", "--out", "{tmp}/out"],
     "--checkpoint {tmp}/hf_cut_data/model.safetensors: truncated: its tensors need"),
    ("export: truncated .distcp", [EX, "--checkpoint", "{tmp}/dcp_cut", "--out", "{tmp}/out"],
     "--checkpoint {tmp}/dcp_cut/__0_0.distcp: truncated: 100 bytes, but .metadata places"),
    ("export: truncated DCP .metadata", [EX, "--checkpoint", "{tmp}/dcp_bad_metadata", "--out", "{tmp}/out"],
     "--checkpoint {tmp}/dcp_bad_metadata/.metadata: unreadable DCP metadata"),
    ("export: a folder that does not describe its model", [EX, "--checkpoint", "{tmp}/hf", "--out", "{tmp}/out"],
     "--checkpoint {tmp}/hf does not describe its model (no model_args.json, no config.json): pass --flavor"),
    ("export: a flavor of other shapes", [EX, "--checkpoint", "{tmp}/dcp", "--out", "{tmp}/out", "--flavor",
                                          "debugmodel"],
     "does not have the shapes of --flavor debugmodel: dim: checkpoint 16, --flavor debugmodel 256"),
    ("export: existing --out", [EX, "--checkpoint", "{tmp}/dcp", "--out", "{tmp}/exists"],
     "--out {tmp}/exists exists; export writes a new folder and replaces nothing"),
    ("export: missing --hf-assets", [EX, "--checkpoint", "{tmp}/dcp", "--out", "{tmp}/out", "--hf-assets",
                                     "{tmp}/nowhere"],
     "--hf-assets {tmp}/nowhere: no such directory"),
    ("export: unknown --dtype", [EX, "--checkpoint", "{tmp}/dcp", "--out", "{tmp}/out", "--dtype", "fp8"],
     "argument --dtype: invalid choice: 'fp8'"),
    ("export: --max-shard-gb 0", [EX, "--checkpoint", "{tmp}/dcp", "--out", "{tmp}/out", "--max-shard-gb", "0"],
     "argument --max-shard-gb: must be a number > 0, got '0'"),
]


