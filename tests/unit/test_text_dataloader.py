import json
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
import torch
from torchtitan.config import ConfigManager

from motif_titan.data import text_dataloader
from motif_titan.data.text_dataloader import (
    LocalTextDataset,
    build_text_dataloader,
    build_tokenizer,
    embedded_assets_dir,
    read_documents,
)

ALPHA = [f"alpha document {i}: the quick brown fox jumps over {i} lazy dogs." for i in range(7)]
BETA = [f"beta document {i}: def f{i}(x):\n    return x * {i}\n" for i in range(5)]
GAMMA = "gamma document 0: a whole text file is one document.\nIt has two lines.\n"
SEQ_LEN = 16


def job_config(*args: str):
    return ConfigManager().parse_args(["--model.hf_assets_path", "embedded", *args])


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    (tmp_path / "alpha.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ALPHA))
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "beta.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in BETA))
    (tmp_path / "gamma.txt").write_text(GAMMA)
    (tmp_path / "notes.md").write_text("not a corpus file")
    return tmp_path


def local_job_config(path: Path, *args: str):
    return job_config(
        "--training.dataset", "local", "--training.dataset_path", str(path),
        "--training.seq_len", str(SEQ_LEN), "--training.local_batch_size", "2", *args,
    )


def token_stream(dataset: LocalTextDataset, tokenizer, epoch: int = 0) -> list[int]:
    """The reference: the rank's documents of ``epoch`` encoded with BOS/EOS, concatenated."""
    return [t for doc in dataset.rank_documents(epoch) for t in tokenizer.encode(doc, add_bos=True, add_eos=True)]


def test_embedded_tokenizer_loads_through_torchtitan_with_bos_and_eos(tokenizer):
    assert tokenizer.get_vocab_size() == 2048
    assert (tokenizer.bos_id, tokenizer.eos_id) == (0, 1)
    assert tokenizer.id_to_token(0) == "<|begin_of_text|>"
    assert tokenizer.id_to_token(1) == "<|end_of_text|>"
    plain = tokenizer.encode("Hello, world!")
    assert tokenizer.encode("Hello, world!", add_bos=True, add_eos=True) == [0, *plain, 1]
    assert 0 not in plain and 1 not in plain


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog.",
        "def f(x):\n\treturn x ** 2  # square\n\n\n    indented   spaces  ",
        "Solve 3x + 4 = 19: subtract 4, so 3x = 15 and x = 5.",
        "Ünïcödé — “quotes”, emoji 🚀 and 中文 survive byte-level BPE.",
        "",
    ],
)
def test_tokenizer_round_trips_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_decode_to_nothing_by_default(tokenizer):
    text = "a document"
    assert tokenizer.decode(tokenizer.encode(text, add_bos=True, add_eos=True)) == text


def test_reads_jsonl_txt_and_parquet_documents(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": ""}) + "\n")
    (tmp_path / "b.txt").write_text("whole\nfile\n")
    pyarrow.parquet.write_table(pyarrow.table({"body": ["p1", None, "p2"]}), tmp_path / "c.parquet")
    assert read_documents(tmp_path / "a.jsonl", "body") == ["one"]
    assert read_documents(tmp_path / "b.txt") == ["whole\nfile\n"]
    assert read_documents(tmp_path / "c.parquet", "body") == ["p1", "p2"]
    with pytest.raises(ValueError, match="'text'"):
        read_documents(tmp_path / "a.jsonl")


def test_windows_are_seq_len_with_labels_shifted_by_one(corpus_dir, tokenizer):
    files = text_dataloader.find_text_files(corpus_dir)
    assert [f.name for f in files] == ["alpha.jsonl", "gamma.txt", "beta.jsonl"]
    dataset = LocalTextDataset(files, tokenizer, seq_len=SEQ_LEN)
    assert dataset.num_documents == len(ALPHA) + len(BETA) + 1
    assert sorted(dataset.rank_documents(0)) == sorted(ALPHA + BETA + [GAMMA])
    samples = list(dataset)
    stream = token_stream(dataset, tokenizer)
    assert len(samples) == len(stream) // (SEQ_LEN + 1)
    for i, (inputs, labels) in enumerate(samples):
        window = torch.tensor(stream[i * (SEQ_LEN + 1) : (i + 1) * (SEQ_LEN + 1)])
        assert inputs["input"].shape == labels.shape == (SEQ_LEN,)
        assert torch.equal(inputs["input"], window[:-1])
        assert torch.equal(labels, window[1:])


def test_documents_of_several_files_are_interleaved(corpus_dir, tokenizer):
    files = text_dataloader.find_text_files(corpus_dir)
    order = LocalTextDataset(files, tokenizer, seq_len=SEQ_LEN).rank_documents(0)
    first_half = " ".join(order[: len(order) // 2])
    assert "alpha" in first_half and "beta" in first_half
    assert order != LocalTextDataset(files, tokenizer, seq_len=SEQ_LEN).rank_documents(1)


def test_two_dp_ranks_read_disjoint_documents(corpus_dir, tokenizer):
    files = text_dataloader.find_text_files(corpus_dir)
    ranks = [LocalTextDataset(files, tokenizer, seq_len=SEQ_LEN, dp_rank=r, dp_world_size=2) for r in (0, 1)]
    for epoch in (0, 1):
        documents = [ranks[r].rank_documents(epoch) for r in (0, 1)]
        assert not set(documents[0]) & set(documents[1])
        assert sorted(documents[0] + documents[1]) == sorted(ALPHA + BETA + [GAMMA])
        assert [len(d) for d in documents] == [7, 6]
    for dataset in ranks:
        tokens = [t for inputs, labels in dataset for t in inputs["input"].tolist() + labels[-1:].tolist()]
        assert tokens == token_stream(dataset, tokenizer)[: len(tokens)]


def test_resume_from_dataloader_state_reproduces_next_batches(corpus_dir, tokenizer):
    config = local_job_config(corpus_dir)
    batches_per_epoch = len(token_stream(build_text_dataloader(2, 1, tokenizer, config).dataset, tokenizer)) // (
        2 * (SEQ_LEN + 1)
    )
    k, m = batches_per_epoch + 2, 2 * batches_per_epoch  # resume inside epoch 1, run into epoch 3

    uninterrupted = iter(build_text_dataloader(2, 1, tokenizer, config))
    reference = [next(uninterrupted) for _ in range(k + m)]

    first = build_text_dataloader(2, 1, tokenizer, config)
    first_iter = iter(first)
    for _ in range(k):
        next(first_iter)
    state = first.state_dict()
    resumed = build_text_dataloader(2, 1, tokenizer, config)
    resumed.load_state_dict(state)
    resumed_iter = iter(resumed)
    for (inputs, labels), (ref_inputs, ref_labels) in zip([next(resumed_iter) for _ in range(m)], reference[k:]):
        assert inputs["input"].shape == (2, SEQ_LEN)
        assert torch.equal(inputs["input"], ref_inputs["input"])
        assert torch.equal(labels, ref_labels)


def test_missing_dataset_path_names_the_field(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match=r"training\.dataset_path"):
        build_text_dataloader(1, 0, tokenizer, local_job_config(tmp_path / "missing"))


def test_directory_without_text_files_names_the_field(tmp_path, tokenizer):
    (tmp_path / "readme.md").write_text("no corpus here")
    with pytest.raises(ValueError, match=r"training\.dataset_path"):
        build_text_dataloader(1, 0, tokenizer, local_job_config(tmp_path))


def test_empty_corpus_names_the_field(tmp_path, tokenizer):
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"training\.dataset_path.*0 non-empty documents"):
        build_text_dataloader(1, 0, tokenizer, local_job_config(tmp_path))


def test_missing_tokenizer_path_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.hf_assets_path"):
        build_tokenizer(job_config("--model.hf_assets_path", str(tmp_path / "missing")))


def test_torchtitan_datasets_are_delegated(tokenizer, monkeypatch):
    calls = []
    monkeypatch.setattr(
        text_dataloader, "build_torchtitan_text_dataloader", lambda *args, **kwargs: calls.append(args) or "torchtitan"
    )
    config = job_config("--training.dataset", "c4_test", "--training.dataset_path", "tests/assets/c4_test")
    assert build_text_dataloader(1, 0, tokenizer, config) == "torchtitan"
    assert build_text_dataloader(1, 0, tokenizer, job_config("--training.dataset", "c4")) == "torchtitan"
    assert len(calls) == 2


def test_embedded_corpus_has_three_domains_under_size_limit(tokenizer):
    assets = embedded_assets_dir()
    total_bytes = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())
    assert total_bytes < 8_000_000
    for domain in ("prose", "math", "code"):
        documents = read_documents(assets / "corpus" / f"{domain}.jsonl")
        assert len(documents) >= 500
        assert 200 <= sum(map(len, documents)) / len(documents) <= 4000

    loader = build_text_dataloader(2, 0, tokenizer, job_config("--training.dataset", "embedded", "--training.seq_len", "64"))
    assert [f.name for f in loader.dataset.files] == ["code.jsonl", "math.jsonl", "prose.jsonl"]
    inputs, labels = next(iter(loader))
    assert inputs["input"].shape == labels.shape == (8, 64)
    assert torch.equal(inputs["input"][:, 1:], labels[:, :-1])


# -- a pretokenize output folder as training.dataset_path ---------------------------------------------------------

def test_token_shard_folder_gives_the_same_batches_as_its_text(corpus_dir, tokenizer, tmp_path):
    """``python -m motif_titan.data.pretokenize`` output as ``training.dataset_path``: read through
    token_shards.TokenShard (the curriculum's reader), the same windows as the text files it was made from, for
    each DP rank, and the same resume state."""
    from motif_titan.data.pretokenize import pretokenize
    from motif_titan.data.token_shards import TokenShard

    files = text_dataloader.find_text_files(corpus_dir)
    shard = pretokenize([str(f) for f in files], tmp_path / "shard", tokenizer, progress=False)
    for rank in (0, 1):
        from_text = build_text_dataloader(2, rank, tokenizer, local_job_config(corpus_dir))
        from_shard = build_text_dataloader(2, rank, tokenizer, local_job_config(shard))
        assert isinstance(from_shard.dataset._documents, TokenShard)
        assert from_shard.dataset.num_documents == from_text.dataset.num_documents == len(ALPHA) + len(BETA) + 1
        text_batches, shard_batches = iter(from_text), iter(from_shard)
        for _ in range(6):  # more than an epoch of this corpus
            (text_inputs, text_labels), (shard_inputs, shard_labels) = next(text_batches), next(shard_batches)
            assert torch.equal(text_inputs["input"], shard_inputs["input"])
            assert torch.equal(text_labels, shard_labels)
        assert from_shard.dataset.state_dict() == from_text.dataset.state_dict()




def test_document_positions_restart_after_every_eos():
    """The positions TorchTitan 0.3's trainer reads document boundaries from (motif_titan.data.positions): 0 at a
    row's start and right after each EOS, which stays in its document."""
    import torch

    from motif_titan.data.positions import document_positions

    eos = 2
    tokens = torch.tensor([[5, eos, 7, 8, eos, 9], [eos, eos, 4, 4, 4, 4]])
    assert document_positions(tokens, eos).tolist() == [[0, 1, 0, 1, 2, 0], [0, 0, 0, 1, 2, 3]]
