"""Curriculum dataloader on the CPU, in process: schedule, mixer statistics, exact resume (also with worker
processes), ramps, disjoint streams, metrics, and every bad config named before data is read."""

import json
import math
import pickle

import pytest
import torch
from torchtitan.config import ConfigManager

from motif_titan.data.curriculum import CurriculumConfig, parse_curriculum
from motif_titan.data.curriculum_dataloader import CurriculumDataloader, build_curriculum_dataloader
from motif_titan.data.document_sources import DomainDocuments
from motif_titan.data.mixer import ScheduledMixer, counter_uniform
from motif_titan.data.packing import DocumentCursor
from motif_titan.data.ramps import BatchSchedule
from motif_titan.data.text_dataloader import LocalTextDataset
from helpers.batches import assert_same_batches, take

SEQ_LEN = 32
EMBEDDED_DOMAINS = [{"name": n, "sources": [f"embedded:{n}"]} for n in ("prose", "math", "code")]
THREE_PHASES = [
    {"start": 1, "end": 5, "start_weights": {"prose": 1.0}, "end_weights": {"prose": 0.5, "math": 0.5}},
    {"start": 8, "end": 12, "start_weights": {"prose": 0.5, "math": 0.5}, "end_weights": {"code": 2.0}},
]


def job_config(*cli: str, **curriculum):
    config = ConfigManager().parse_args(["--job.custom_config_module", "motif_titan.job_config",
                                         "--model.hf_assets_path", "embedded", "--training.seq_len", str(SEQ_LEN),
                                         "--training.local_batch_size", "2", *cli])
    for key, value in curriculum.items():
        setattr(config.curriculum, key, value)
    return config


def loader(tokenizer, *cli, dp_rank=0, dp_world_size=1, **curriculum) -> CurriculumDataloader:
    curriculum = {"domains": EMBEDDED_DOMAINS, "phases": THREE_PHASES, **curriculum}
    return build_curriculum_dataloader(dp_world_size, dp_rank, tokenizer, job_config(*cli, **curriculum))


# -- schedule ---------------------------------------------------------------------------------------------------

def test_schedule_interpolates_linearly_and_holds_between_phases():
    _, schedule = parse_curriculum(CurriculumConfig(domains=EMBEDDED_DOMAINS, phases=THREE_PHASES))
    expected = {0: (1, 0, 0), 1: (1, 0, 0), 3: (0.75, 0.25, 0), 5: (0.5, 0.5, 0), 7: (0.5, 0.5, 0),
                8: (0.5, 0.5, 0), 10: (0.25, 0.25, 0.5), 12: (0, 0, 1), 99: (0, 0, 1)}
    for t, weights in expected.items():
        assert schedule.weights(t) == pytest.approx(weights), t


def test_cap_scales_the_group_down_to_its_share():
    phases = [{"start": 0, "end": 10, "start_weights": {"prose": 1, "math": 1, "code": 2},
               "cap": {"domains": ["math", "code"], "max_share": 0.25}}]
    _, schedule = parse_curriculum(CurriculumConfig(domains=EMBEDDED_DOMAINS, phases=phases))
    # group 3 of 4 -> scaled by 0.25 * 1 / (0.75 * 3): prose 1, math 1/9, code 2/9 -> shares 0.75, 1/12, 1/6
    assert schedule.weights(5) == pytest.approx((0.75, 1 / 12, 1 / 6))


# -- mixer -------------------------------------------------------------------------------------------------------

def test_counter_uniform_is_a_pure_function_and_uniform():
    values = [counter_uniform(7, 3, t) for t in range(20000)]
    assert values[:100] == [counter_uniform(7, 3, t) for t in range(100)]
    assert values[:100] != [counter_uniform(7, 4, t) for t in range(100)]
    assert abs(sum(values) / len(values) - 0.5) < 4 * math.sqrt(1 / 12 / len(values))
    assert 0.0 <= min(values) and max(values) < 1.0


def test_realized_domain_frequencies_match_the_schedule():
    """At several t, 20000 draws: each frequency within 4.5 standard deviations of w(t); weight 0 never drawn."""
    _, schedule = parse_curriculum(CurriculumConfig(domains=EMBEDDED_DOMAINS, phases=THREE_PHASES))
    n = 20000
    for t in (1, 3, 6, 10, 12):
        mixer = ScheduledMixer(schedule, seed=123, stream=t)
        counts = [0, 0, 0]
        for _ in range(n):
            counts[mixer.draw(t)] += 1
        for count, w in zip(counts, schedule.weights(t)):
            if w == 0:
                assert count == 0
            else:
                assert abs(count / n - w) <= 4.5 * math.sqrt(w * (1 - w) / n), (t, counts)


def test_capped_group_never_exceeds_its_share_of_the_phase():
    phases = [{"start": 0, "end": 10, "start_weights": {"prose": 1}},
              {"start": 10, "end": 1000, "start_weights": {"prose": 0.5, "math": 0.5},
               "cap": {"domains": ["math"], "max_share": 0.1}}]
    _, schedule = parse_curriculum(CurriculumConfig(domains=EMBEDDED_DOMAINS, phases=phases))
    mixer = ScheduledMixer(schedule, seed=0, stream=0)
    assert all(mixer.draw(5) == 0 for _ in range(50))
    math_items = 0
    for i in range(1, 5001):
        math_items += mixer.draw(500) == 1
        assert math_items <= 0.1 * i
    assert schedule.weights(500) == pytest.approx((0.9, 0.1, 0.0))  # 50% scaled down to the 10% cap
    assert math_items >= 0.08 * 5000  # the realized guard only trims the draws that would overshoot


def test_mixer_resumes_exactly_from_its_state():
    _, schedule = parse_curriculum(CurriculumConfig(domains=EMBEDDED_DOMAINS, phases=THREE_PHASES))
    reference = ScheduledMixer(schedule, 5, 1)
    draws = [reference.draw(t % 13) for t in range(300)]
    first = ScheduledMixer(schedule, 5, 1)
    assert [first.draw(t % 13) for t in range(120)] == draws[:120]
    resumed = ScheduledMixer(schedule, 5, 1)
    resumed.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    assert [resumed.draw(t % 13) for t in range(120, 300)] == draws[120:]


# -- streams and loader ----------------------------------------------------------------------------------------

def test_streams_read_disjoint_documents_that_cover_the_domain():
    documents = DomainDocuments([list(range(103))])
    shares = [DocumentCursor(documents, 0, 0, stream, 4).share(epoch=0) for stream in range(4)]
    flat = [int(i) for share in shares for i in share]
    assert sorted(flat) == list(range(103))
    next_epoch = DocumentCursor(documents, 0, 0, 0, 4).share(epoch=1)
    assert list(next_epoch) != list(shares[0])


def test_dp_ranks_get_different_batches(tokenizer):
    batches = [next(iter(loader(tokenizer, dp_rank=r, dp_world_size=2))) for r in range(2)]
    assert not torch.equal(batches[0][0]["input"], batches[1][0]["input"])


def test_windows_are_consecutive_pieces_of_the_domains_document_stream(tokenizer):
    """Only math: the windows, back to back, are the rank's math documents in epoch order, each BOS ... EOS."""
    phases = [{"start": 0, "end": 1, "start_weights": {"math": 1}}]
    dataloader = loader(tokenizer, phases=phases)
    batches = take(iter(dataloader), 10)
    for inputs, labels in batches:
        assert inputs["input"].shape == labels.shape == (2, SEQ_LEN)
        assert torch.equal(inputs["input"][:, 1:], labels[:, :-1])
    stream = [t for inputs, labels in batches for r in range(2)
              for t in inputs["input"][r].tolist() + labels[r, -1:].tolist()]
    documents = dataloader.dataset.documents[1]
    order = DocumentCursor(documents, 0, 1, 0, 1).share(epoch=0)
    reference = [t for i in order for t in tokenizer.encode(documents.document(int(i)), add_bos=True, add_eos=True)]
    assert stream == reference[:len(stream)]
    assert tokenizer.eos_id in stream


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumes_exactly_from_its_state_dict(tokenizer, num_workers):
    """k batches, state_dict (TorchTitan's pickled per-DP-rank form), a new loader loads it: the following batches
    equal an uninterrupted loader's. With worker processes too (each worker owns every num_workers-th batch)."""
    cli = ("--training.dataloader.num_workers", str(num_workers))
    reference = take(iter(loader(tokenizer, *cli, dp_rank=1, dp_world_size=2)), 14)
    first = loader(tokenizer, *cli, dp_rank=1, dp_world_size=2)
    assert_same_batches(take(iter(first), 5), reference[:5])
    metrics = first.metrics(step=5)  # read from the workers' snapshots when there are workers
    assert sum(metrics[f"curriculum/tokens_seen/{d}"] for d in ("prose", "math", "code")) == 5 * 2 * SEQ_LEN
    state = pickle.loads(pickle.dumps(first.state_dict()))
    assert set(state) == {"dp_rank_1", "world_size"}
    resumed = loader(tokenizer, *cli, dp_rank=1, dp_world_size=2)
    resumed.load_state_dict(state)
    assert_same_batches(take(iter(resumed), 9), reference[5:])


def ramped_steps(dataloader, steps):
    """Group micro-batches into trainer steps as CurriculumTrainer does."""
    dataloader.trainer_drives_batch_ramp = True
    iterator = iter(dataloader)
    return [take(iterator, dataloader.micro_batches_per_step(step)) for step in steps]


RAMPS = dict(batch_ramp_start_tokens=2 * SEQ_LEN * 2, batch_ramp_steps=[2, 8],
             seq_len_ramp_start=SEQ_LEN // 4, seq_len_ramp_steps=[3, 9])
RAMP_CLI = ("--training.global_batch_size", "8")  # 2 ranks x 2 rows: 2 micro-batches per step at the end


def test_ramps_give_each_step_its_scheduled_tokens():
    schedule = BatchSchedule(dp_world_size=2, local_batch_size=2, seq_len=SEQ_LEN, global_batch_size=8,
                             batch_ramp_start_tokens=128, batch_ramp_steps=(2, 8), seq_len_ramp_start=8,
                             seq_len_ramp_steps=(3, 9))
    assert [schedule.micro_batches(s) for s in range(1, 11)] == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]  # 128 -> 256
    assert [schedule.row_len(s) for s in range(1, 11)] == [8, 8, 8, 8, 16, 16, 16, 16, 32, 32]
    for s in range(1, 11):
        assert schedule.rows(s) * schedule.row_len(s) == 2 * SEQ_LEN


def test_loader_follows_the_ramps_and_resumes_mid_ramp(tokenizer):
    steps = range(1, 11)
    dataloader = loader(tokenizer, *RAMP_CLI, dp_world_size=2, **RAMPS)
    reference = ramped_steps(dataloader, steps)
    schedule = dataloader.plan.batches
    for step, micro_batches in zip(steps, reference):
        assert len(micro_batches) == schedule.micro_batches(step)
        for inputs, labels in micro_batches:
            assert labels.shape == (schedule.rows(step), schedule.row_len(step))
        # tokens this rank consumed in the step, times the 2 ranks, is the scheduled global step size
        assert 2 * sum(labels.numel() for _, labels in micro_batches) == schedule.step_tokens(step)

    first = loader(tokenizer, *RAMP_CLI, dp_world_size=2, **RAMPS)
    ramped_steps(first, range(1, 6))  # stop inside both ramps
    resumed = loader(tokenizer, *RAMP_CLI, dp_world_size=2, **RAMPS)
    resumed.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    for expected, got in zip(reference[5:], ramped_steps(resumed, range(6, 11))):
        assert_same_batches(got, expected)


def test_batch_ramp_refuses_a_trainer_that_does_not_drive_it(tokenizer):
    dataloader = loader(tokenizer, *RAMP_CLI, dp_world_size=2, **RAMPS)
    with pytest.raises(RuntimeError, match=r"curriculum.batch_ramp_start_tokens > 0 needs a trainer that draws "
                                           r"micro_batches_per_step\(step\)"):
        iter(dataloader)


def test_metrics_report_weights_and_tokens_per_domain(tokenizer):
    dataloader = loader(tokenizer)
    take(iter(dataloader), 3)
    metrics = dataloader.metrics(step=3)
    assert metrics["curriculum/weight/prose"] == pytest.approx(0.75)
    assert metrics["curriculum/weight/math"] == pytest.approx(0.25)
    assert metrics["curriculum/weight/code"] == 0.0
    seen = [metrics[f"curriculum/tokens_seen/{d}"] for d in ("prose", "math", "code")]
    assert sum(seen) == 3 * 2 * SEQ_LEN and seen[2] == 0


def test_phases_in_tokens_follow_the_global_tokens_before_each_step(tokenizer):
    """unit = "tokens", 2 ranks x 2 rows x 32 tokens = 128 global tokens per step: prose only until token 640
    (steps 1..5), math only from there (step 6 on)."""
    phases = [{"start": 0, "end": 1, "start_weights": {"prose": 1}},
              {"start": 640, "end": 641, "start_weights": {"math": 1}}]
    dataloader = loader(tokenizer, dp_world_size=2, unit="tokens", phases=phases)
    iterator = iter(dataloader)
    take(iterator, 5)
    assert dataloader.metrics(step=5)["curriculum/tokens_seen/math"] == 0
    assert dataloader.metrics(step=5)["curriculum/weight/prose"] == 1.0
    take(iterator, 1)
    metrics = dataloader.metrics(step=6)
    assert metrics["curriculum/tokens_seen/math"] == 2 * SEQ_LEN and metrics["curriculum/weight/math"] == 1.0
    assert metrics["curriculum/epoch/math"] == 0


def test_without_domains_the_builder_is_the_text_dataloader(tokenizer):
    config = job_config("--training.dataset", "embedded")
    dataloader = build_curriculum_dataloader(1, 0, tokenizer, config)
    assert isinstance(dataloader.dataset, LocalTextDataset)


# -- bad input -----------------------------------------------------------------------------------------------------

def _phases(**weights):
    return [{"start": 0, "end": 10, "start_weights": weights or {"prose": 1}}]


@pytest.mark.parametrize("curriculum,exception,message", [
    (dict(domains=[{"name": "web", "sources": ["missing/web.jsonl"]}], phases=[{"start": 0, "end": 5,
                                                                                 "start_weights": {"web": 1}}]),
     FileNotFoundError, "curriculum.domains[0].sources[0] = 'missing/web.jsonl': no such file or directory"),
    (dict(phases=_phases(prose=1, web=1)), ValueError,
     "curriculum.phases[0].start_weights.web = 1; allowed: weights of the domains ['prose', 'math', 'code']"),
    (dict(phases=_phases(prose=1, math=-0.5)), ValueError,
     "curriculum.phases[0].start_weights.math = -0.5; allowed: a number >= 0"),
    (dict(phases=[{"start": 0, "end": 10, "start_weights": {"prose": 1}, "end_weights": {"prose": 0}}]),
     ValueError, "curriculum.phases[0].end_weights = {'prose': 0}; allowed: weights that sum to > 0 (at 10 no "
                 "domain could be drawn)"),
    (dict(phases=[{"start": 0, "end": 10, "start_weights": {"prose": 1}},
                  {"start": 8, "end": 20, "start_weights": {"math": 1}}]),
     ValueError, "curriculum.phases[1].start = 8; allowed: >= 10, the end of phases[0] (phases must not overlap)"),
    (dict(phases=[{"start": 0, "end": 10, "start_weights": {"math": 1},
                   "cap": {"domains": ["math"], "max_share": 0.1}}]),
     ValueError, "allowed: weights that sum to > 0 (at 0 no domain could be drawn after the cap"),
    (dict(phases=[{"start": 5, "end": 5, "start_weights": {"prose": 1}}]), ValueError,
     "curriculum.phases[0].end = 5; allowed: > start (5)"),
    (dict(mode="dpo"), ValueError, "curriculum.mode = 'dpo'; allowed: ['pretrain', 'sft']"),
    (dict(unit="epochs"), ValueError, "curriculum.unit = 'epochs'; allowed: ['steps', 'tokens']"),
    (dict(phases=[]), ValueError, "curriculum.phases = []; allowed: at least one [[curriculum.phases]] table"),
    (dict(domains=[*EMBEDDED_DOMAINS, {"name": "math", "sources": ["embedded:math"]}]), ValueError,
     "curriculum.domains[3].name = 'math'; allowed: a name no other domain has"),
    (dict(domains=[{"name": "x", "sources": ["embedded:poetry"]}], phases=[{"start": 0, "end": 1,
                                                                          "start_weights": {"x": 1}}]),
     FileNotFoundError, "no embedded corpus 'poetry'; allowed: ['code', 'math', 'prose']"),
    (dict(batch_ramp_start_tokens=10), ValueError, "curriculum.batch_ramp_start_tokens = 10; allowed: 0 (off) or "
                                                   "between one micro-batch over the DP ranks (64 tokens)"),
    (dict(batch_ramp_start_tokens=64, batch_ramp_steps=[5, 5]), ValueError,
     "curriculum.batch_ramp_steps = [5, 5]; allowed: [first, last] steps with 1 <= first < last"),
    (dict(seq_len_ramp_start=12, seq_len_ramp_steps=[1, 5]), ValueError,
     "curriculum.seq_len_ramp_start = 12; allowed: 0 (off) or training.seq_len (32) / 2^k for some k >= 1"),
])
def test_bad_curriculum_is_refused_before_any_data_is_read(tokenizer, curriculum, exception, message):
    with pytest.raises(exception) as error:
        loader(tokenizer, **curriculum)
    assert message in str(error.value)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_source_is_refused(tokenizer, tmp_path, content):
    (tmp_path / "empty.jsonl").write_text(content)
    domains = [*EMBEDDED_DOMAINS, {"name": "empty", "sources": [str(tmp_path / "empty.jsonl")]}]
    with pytest.raises(ValueError, match=r"curriculum.domains\[3\].sources\[0\] = '.*empty.jsonl': the source "
                                         r"holds no documents"):
        loader(tokenizer, domains=domains)


def test_too_few_documents_for_the_streams_is_refused(tokenizer, tmp_path):
    (tmp_path / "tiny.jsonl").write_text(json.dumps({"text": "only one document"}) + "\n")
    domains = [{"name": "tiny", "sources": [str(tmp_path / "tiny.jsonl")]}]
    phases = [{"start": 0, "end": 1, "start_weights": {"tiny": 1}}]
    with pytest.raises(ValueError, match=r"curriculum.domains\[0\] \('tiny'\) has 1 documents, fewer than the 2 "
                                         r"streams"):
        loader(tokenizer, domains=domains, phases=phases, dp_world_size=2)


def test_sources_of_every_kind_feed_one_domain(tokenizer, tmp_path):
    """A .jsonl, a .parquet and a .txt file, and an HF datasets directory: documents of all four, tokenized."""
    import pyarrow
    import pyarrow.parquet

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": f"json doc {i}"}) + "\n" for i in range(3)))
    pyarrow.parquet.write_table(pyarrow.table({"body": [f"parquet doc {i}" for i in range(2)]}),
                                tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text("the text file")
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "train.jsonl").write_text("".join(json.dumps({"body": f"hf doc {i}"}) + "\n" for i in range(4)))
    domains = [{"name": "mixed", "text_field": "body", "sources": [
        str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet"), str(tmp_path / "c.txt"), f"hf:{hf_dir}"]}]
    phases = [{"start": 0, "end": 1, "start_weights": {"mixed": 1}}]
    dataloader = loader(tokenizer, domains=domains, phases=phases)
    documents = dataloader.dataset.documents[0]
    texts = sorted(documents.document(i) for i in range(len(documents)))
    assert texts == sorted([f"json doc {i}" for i in range(3)] + [f"parquet doc {i}" for i in range(2)]
                           + ["the text file"] + [f"hf doc {i}" for i in range(4)])
    inputs, _ = next(iter(dataloader))
    decoded = tokenizer.decode(inputs["input"][0].tolist())
    assert "doc" in decoded or "text file" in decoded
