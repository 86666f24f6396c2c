"""Pre-tokenized token shards: the CLI writes them atomically, the loader memory-maps them and gives exactly the
batches it gives from the text, and a shard refuses a tokenizer it was not written with."""

import json
import shutil

import pytest
import torch
from torchtitan.config import ConfigManager

from motif_titan.data.curriculum_dataloader import build_curriculum_dataloader
from motif_titan.data.pretokenize import pretokenize
from motif_titan.data.text_dataloader import build_tokenizer, embedded_assets_dir

from helpers.corpora import corpus





def test_failed_pretokenize_leaves_nothing(tokenizer, tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(ValueError, match=r"^source '.*bad\.jsonl': .*bad\.jsonl.*2.* 'text' field.*\(--text-field"):
        pretokenize([str(tmp_path / "bad.jsonl")], tmp_path / "shard", tokenizer, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    with pytest.raises(FileExistsError, match="never overwritten"):
        pretokenize([str(corpus(tmp_path))], tmp_path, tokenizer, progress=False)


def loader(tokenizer, sources, *cli):
    config = ConfigManager().parse_args(["--job.custom_config_module", "motif_titan.job_config",
                                         "--model.hf_assets_path", "embedded", "--training.seq_len", "24",
                                         "--training.local_batch_size", "3", *cli])
    config.curriculum.domains = [{"name": "prose", "sources": sources[0]}, {"name": "math", "sources": sources[1]}]
    config.curriculum.phases = [{"start": 0, "end": 10, "start_weights": {"prose": 0.5, "math": 0.5}}]
    return build_curriculum_dataloader(2, 1, tokenizer, config)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shards_give_the_same_batches_as_the_text(tokenizer, tmp_path, num_workers):
    prose = pretokenize(["embedded:prose"], tmp_path / "prose", tokenizer, progress=False)
    math = pretokenize(["embedded:math"], tmp_path / "math", tokenizer, progress=False)
    cli = ("--training.dataloader.num_workers", str(num_workers))
    from_text = iter(loader(tokenizer, (["embedded:prose"], ["embedded:math"]), *cli))
    from_shards = iter(loader(tokenizer, ([str(prose)], [str(math)]), *cli))
    for _ in range(12):
        (text_inputs, text_labels), (shard_inputs, shard_labels) = next(from_text), next(from_shards)
        assert torch.equal(text_inputs["input"], shard_inputs["input"])
        assert torch.equal(text_labels, shard_labels)


def test_shard_refuses_another_tokenizer(tokenizer, tmp_path):
    shard = pretokenize([str(corpus(tmp_path))], tmp_path / "shard", tokenizer, progress=False)
    other = tmp_path / "other_tokenizer"
    shutil.copytree(embedded_assets_dir() / "tokenizer", other)
    vocab = json.loads((other / "tokenizer.json").read_text())
    vocab["model"]["merges"] = vocab["model"]["merges"][:-1]
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    other_tokenizer = build_tokenizer(ConfigManager().parse_args(["--model.hf_assets_path", str(other)]))
    with pytest.raises(ValueError, match=r"sources\[0\] = .*shard.*was written with another tokenizer"):
        loader(other_tokenizer, ([str(shard)], ["embedded:math"]))
