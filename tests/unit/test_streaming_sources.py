"""Streamed curriculum domains (``streaming = true``: 'hf:' sources opened with ``streaming=True``), on local json
datasets written in tmp_path: the scheduled mixture as for in-memory domains, disjoint shares per DP rank and worker
that cover the stream, epochs restarting the stream, exact resume (also mid-batch and with worker processes), and
the bad configs named."""

import json
import math
import pickle

import pytest
from torchtitan.config import ConfigManager

from motif_titan.data import packing
from motif_titan.data.curriculum_dataloader import build_curriculum_dataloader
from motif_titan.data.mixer import ScheduledMixer
from motif_titan.data.packing import StreamCursor
from helpers.batches import assert_same_batches, take

SEQ_LEN = 32
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu")


def write_stream(folder, files: int, per_file: int):
    """``files`` jsonl files of ``per_file`` documents each (a few dozen tokens, lengths varying)."""
    folder.mkdir()
    for f in range(files):
        lines = [json.dumps({"text": f"web {f}-{i}: " + " ".join(WORDS[(i + k) % len(WORDS)]
                                                                 for k in range(5 + 3 * i))})
                 for i in range(per_file)]
        (folder / f"part{f}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def documents_of(folder) -> list[str]:
    return [json.loads(line)["text"] for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().split("\n")
            if line]


def job_config(domains, phases, *cli):
    config = ConfigManager().parse_args(["--job.custom_config_module", "motif_titan.job_config",
                                         "--model.hf_assets_path", "embedded", "--training.seq_len", str(SEQ_LEN),
                                         "--training.local_batch_size", "2", *cli])
    config.curriculum.domains, config.curriculum.phases = domains, phases
    return config


def loader(tokenizer, domains, phases, *cli, dp_rank=0, dp_world_size=1):
    return build_curriculum_dataloader(dp_world_size, dp_rank, tokenizer, job_config(domains, phases, *cli))


def web(folder, streaming=True):
    return {"name": "web", "sources": [f"hf:{folder}"], "streaming": streaming}


WITH_EMBEDDED = [{"name": n, "sources": [f"embedded:{n}"]} for n in ("prose", "math")]
ONLY_WEB = [{"start": 0, "end": 1, "start_weights": {"web": 1}}]


def one_epoch(cursor) -> tuple[list, object]:
    """The documents a cursor gives in its current epoch, and the first one of the next."""
    documents = []
    epoch = cursor.epoch
    while True:
        document = cursor.next_document()
        if cursor.epoch != epoch:
            return documents, document
        documents.append(document)


# -- mixture -----------------------------------------------------------------------------------------------------

def test_streamed_domain_gets_the_scheduled_frequencies_like_an_in_memory_one(tokenizer, tmp_path):
    """The loader-level, streamed counterpart of test_curriculum's mixer frequency test. 300 steps under a moving
    schedule: the realized domain counts are within 4.5 standard deviations of the sum of w(t) over the items and
    equal the in-memory loader's exactly (the mixer's draws never depend on how a domain's documents are read)."""
    folder = write_stream(tmp_path / "web", files=2, per_file=10)
    phases = [{"start": 1, "end": 150, "start_weights": {"web": 0.6, "prose": 0.4},
               "end_weights": {"web": 0.2, "prose": 0.3, "math": 0.5}},
              {"start": 200, "end": 300, "start_weights": {"web": 1.0}}]
    steps = 300
    counts = {}
    for streaming in (True, False):
        dataloader = loader(tokenizer, [web(folder, streaming), *WITH_EMBEDDED], phases)
        take(iter(dataloader), steps)
        metrics = dataloader.metrics(step=steps)
        counts[streaming] = [metrics[f"curriculum/tokens_seen/{d}"] / SEQ_LEN for d in ("web", "prose", "math")]
    assert counts[True] == counts[False]
    schedule = dataloader.plan.schedule
    weights = [schedule.weights(step) for step in range(1, steps + 1) for _ in range(2)]  # 2 rows a step
    for d, count in enumerate(counts[True]):
        expected = sum(w[d] for w in weights)
        variance = sum(w[d] * (1 - w[d]) for w in weights)
        assert abs(count - expected) <= 4.5 * math.sqrt(variance), (d, count, expected)
    reference = ScheduledMixer(schedule, seed=0, stream=0)
    drawn = [0, 0, 0]
    for step in range(1, steps + 1):
        for _ in range(2):
            drawn[reference.draw(step)] += 1
    assert drawn == counts[True]


# -- shares and epochs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("files", [1, 2, 3])
def test_dp_ranks_read_disjoint_documents_that_cover_the_stream(tokenizer, tmp_path, files):
    """Two DP ranks (1 or 3 files: every rank reads the files and keeps every other document; 2 files: a file each):
    disjoint shares whose union is the dataset, each rank's windows its share's documents back to back in stream
    order; the same with 2 ranks x 2 dataloader workers (4 streams)."""
    folder = write_stream(tmp_path / "web", files=files, per_file=12 // files)
    shares = []
    for rank in range(2):
        dataloader = loader(tokenizer, [web(folder)], ONLY_WEB, dp_rank=rank, dp_world_size=2)
        cursor = StreamCursor(dataloader.dataset.documents[0], rank, 2)
        share, _ = one_epoch(cursor)
        shares.append(share)
        batches = take(iter(dataloader), 6)
        windows = [t for inputs, labels in batches for r in range(2)
                   for t in inputs["input"][r].tolist() + labels[r, -1:].tolist()]
        reference = [t for doc in share * 10 for t in tokenizer.encode(doc, add_bos=True, add_eos=True)]
        assert windows == reference[:len(windows)]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(documents_of(folder))

    documents = dataloader.dataset.documents[0]
    four = [one_epoch(StreamCursor(documents, stream, 4))[0] for stream in range(4)]
    flat = [doc for share in four for doc in share]
    assert len(flat) == len(set(flat)) and sorted(flat) == sorted(documents_of(folder))


def test_an_exhausted_stream_restarts_for_the_next_epoch(tokenizer, tmp_path):
    """The in-memory path's epochs: when the share is used up it is read again from the start (in the same stream
    order), ``epoch`` counts up, and the loader's metric shows it."""
    folder = write_stream(tmp_path / "web", files=2, per_file=3)
    dataloader = loader(tokenizer, [web(folder)], ONLY_WEB)
    cursor = StreamCursor(dataloader.dataset.documents[0], 0, 1)
    read = [cursor.next_document() for _ in range(14)]
    assert read == documents_of(folder) * 2 + documents_of(folder)[:2]
    assert (cursor.epoch, cursor.position) == (2, 2)
    iterator = iter(dataloader)
    assert dataloader.metrics(step=1)["curriculum/epoch/web"] == 0
    take(iterator, 8)  # 16 windows of 32 tokens: more than the 6 documents hold
    assert dataloader.metrics(step=8)["curriculum/epoch/web"] >= 1


def test_a_stream_without_documents_is_named(tokenizer, tmp_path):
    folder = write_stream(tmp_path / "web", files=1, per_file=1)
    dataloader = loader(tokenizer, [web(folder)], ONLY_WEB, dp_rank=1, dp_world_size=2)
    with pytest.raises(ValueError, match=r"curriculum.domains\[0\] \('web'\): stream 1 of 2 \(DP ranks x "
                                         r"training.dataloader.num_workers\) got no document"):
        next(iter(dataloader))


# -- resume ------------------------------------------------------------------------------------------------------

def test_streamed_loader_resumes_exactly_at_every_batch(tokenizer, tmp_path, monkeypatch):
    """Stop after k batches (every k, through the stream's epochs), save the state (TorchTitan's pickled form), a
    new loader loads it: the next 3 batches equal the uninterrupted loader's. Streams are read 4 documents at a
    time, so states fall inside read batches too."""
    monkeypatch.setattr(packing, "STREAM_READ_BATCH", 4)
    folder = write_stream(tmp_path / "web", files=2, per_file=6)
    config = job_config([web(folder), *WITH_EMBEDDED], [{"start": 0, "end": 1,
                                                         "start_weights": {"web": 0.7, "prose": 0.3}}])

    def make():
        return build_curriculum_dataloader(2, 1, tokenizer, config)

    total = 12
    reference = take(iter(make()), total)
    positions = set()
    first = make()
    iterator = iter(first)
    for k in range(1, total):
        next(iterator)
        state = pickle.loads(pickle.dumps(first.state_dict()))
        stream = first.dataset.state_dict()["streams"][0]
        positions.add((stream["epoch"] > 0, stream["batch_start"] is not None, stream["offset"] % 4 != 0))
        resumed = make()
        resumed.load_state_dict(state)
        assert_same_batches(take(iter(resumed), min(3, total - k)), reference[k:k + 3])
    assert (True, True, True) in positions  # resumed after an epoch, inside a read batch that was not the first


def test_streamed_loader_resumes_exactly_with_worker_processes(tokenizer, tmp_path):
    """2 dataloader workers (4 streams with 2 DP ranks): each worker reads its own share; k batches, state, a new
    loader: the following batches equal an uninterrupted loader's."""
    folder = write_stream(tmp_path / "web", files=4, per_file=4)
    domains = [web(folder), *WITH_EMBEDDED]
    phases = [{"start": 0, "end": 1, "start_weights": {"web": 0.7, "prose": 0.3}}]
    cli = ("--training.dataloader.num_workers", "2")

    def make():
        return loader(tokenizer, domains, phases, *cli, dp_rank=1, dp_world_size=2)

    reference = take(iter(make()), 10)
    first = make()
    assert_same_batches(take(iter(first), 4), reference[:4])
    state = pickle.loads(pickle.dumps(first.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    assert_same_batches(take(iter(resumed), 6), reference[4:])


def sft_loader(tokenizer, folder):
    config = ConfigManager().parse_args([
        "--job.custom_config_module", "motif_titan.job_config", "--model.name", "motif2", "--model.flavor",
        "debugmodel_flex_attn", "--model.hf_assets_path", "embedded", "--training.seq_len", "64",
        "--training.local_batch_size", "2"])
    config.curriculum.mode = "sft"
    config.curriculum.domains = [{"name": "chat", "sources": [f"hf:{folder}"], "streaming": True}]
    config.curriculum.phases = [{"start": 0, "end": 1, "start_weights": {"chat": 1}}]
    return build_curriculum_dataloader(1, 0, tokenizer, config)


def write_chats(folder, chats):
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return folder


def test_streamed_sft_records_pack_and_resume(tokenizer, tmp_path):
    """SFT from a streamed domain: whole records (messages) in stream order, packed; resume is exact."""
    folder = write_chats(tmp_path / "chat", [
        {"messages": [{"role": "user", "content": f"Question {i}: " + "why " * (i % 5)},
                      {"role": "assistant", "content": f"Answer {i}."}]} for i in range(10)])
    reference = take(iter(sft_loader(tokenizer, folder)), 6)
    first_row = tokenizer.decode(reference[0][0]["input"][0].tolist())
    assert "Question 0" in first_row and "Answer 0." in first_row and "Question 1" in first_row
    first = sft_loader(tokenizer, folder)
    take(iter(first), 2)
    resumed = sft_loader(tokenizer, folder)
    resumed.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    assert_same_batches(take(iter(resumed), 4), reference[2:])


def test_a_streamed_sft_domain_without_a_usable_sample_is_named(tokenizer, tmp_path):
    """No record has a reply: after one pass over the stream (it has no length to count) the domain is named."""
    folder = write_chats(tmp_path / "chat", [{"messages": [{"role": "user", "content": f"hi {i}"}]}
                                             for i in range(5)])
    with pytest.raises(ValueError, match=r"curriculum.domains\[0\] \('chat'\): no sample fits in "
                                         r"training.seq_len = 64 tokens with an assistant message"):
        next(iter(sft_loader(tokenizer, folder)))


# -- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["yes", 1, None])
def test_streaming_must_be_a_bool(tokenizer, tmp_path, value):
    domains = [{**web(tmp_path / "missing"), "streaming": value}]
    with pytest.raises(ValueError, match=rf"curriculum.domains\[0\].streaming = {value!r}; allowed: true or false "
                                         r"\(a bool"):
        loader(tokenizer, domains, ONLY_WEB)


def test_a_streamed_domain_refuses_sources_that_are_not_hf(tokenizer, tmp_path):
    domains = [{"name": "web", "sources": [f"hf:{tmp_path}", "embedded:prose"], "streaming": True}]
    with pytest.raises(ValueError, match=r"curriculum.domains\[0\].sources\[1\] = 'embedded:prose'; allowed: "
                                         r"'hf:PATH' sources only, with curriculum.domains\[0\].streaming = true"):
        loader(tokenizer, domains, ONLY_WEB)
