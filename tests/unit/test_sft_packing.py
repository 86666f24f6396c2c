"""SFT mode: chat templates with prompt labels ignored, packing with positions restarting and attention blocked at
sample boundaries (checked on TorchTitan's own block_causal mask and on a flex motif2 model), over-long samples
dropped and counted (never truncated), exact resume."""

import dataclasses
import json
import pickle
import re
import shutil

import pytest
import torch
from torchtitan.config import ConfigManager
from motif_titan.model.attention import document_mask_mod

from motif_titan.data.curriculum_dataloader import build_curriculum_dataloader
from motif_titan.data.sft import IGNORE_INDEX, SimpleChatTemplate, TokenizerChatTemplate, sample_labels
from motif_titan.data.text_dataloader import embedded_assets_dir
from motif_titan.model import Motif2Model, motif2_args

SEQ_LEN = 96


def chat(i: int, words: int) -> dict:
    return {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": f"Question {i}: " + "why " * words},
                         {"role": "assistant", "content": f"Answer {i}: " + "because " * words}]}


# 3 samples are far longer than SEQ_LEN; one has no assistant message
CHATS = [chat(i, [3, 8, 1, 60, 5, 12, 2, 70, 4, 6, 9, 3, 80, 2, 7, 5][i]) for i in range(16)]
CHATS[9] = {"messages": [{"role": "user", "content": "no answer here"}]}
QA = [{"prompt": f"What is {i} + {i}?", "response": f"{2 * i}"} for i in range(12)]


@pytest.fixture
def sft_files(tmp_path):
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(c) + "\n" for c in QA))
    return tmp_path


def sft_loader(tokenizer, files, *cli, flavor="debugmodel_flex_attn", **curriculum):
    config = ConfigManager().parse_args([
        "--job.custom_config_module", "motif_titan.job_config", "--model.name", "motif2", "--model.flavor", flavor,
        "--model.hf_assets_path", "embedded", "--training.seq_len", str(SEQ_LEN),
        "--training.local_batch_size", "2", *cli])
    config.curriculum.mode = "sft"
    config.curriculum.domains = [{"name": "chat", "sources": [str(files / "chat.jsonl")]},
                                 {"name": "qa", "sources": [str(files / "qa.jsonl")]}]
    config.curriculum.phases = [{"start": 0, "end": 10, "start_weights": {"chat": 0.7, "qa": 0.3}}]
    for key, value in curriculum.items():
        setattr(config.curriculum, key, value)
    return build_curriculum_dataloader(1, 0, tokenizer, config)


def encoded_samples(tokenizer) -> dict[tuple[int, ...], str]:
    """Every sample that fits in a row, encoded by the simple template -> its origin."""
    template = SimpleChatTemplate()
    out = {}
    for i, c in enumerate(CHATS):
        if i != 9:
            tokens, _ = template.encode(c["messages"], tokenizer)
            out[tuple(tokens.tolist())] = f"chat {i}"
    for i, q in enumerate(QA):
        messages = [{"role": "user", "content": q["prompt"]}, {"role": "assistant", "content": q["response"]}]
        out[tuple(template.encode(messages, tokenizer)[0].tolist())] = f"qa {i}"
    return out


def segments(positions: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of positions 0, 1, 2, ... in a row."""
    starts = [i for i, p in enumerate(positions.tolist()) if p == 0] + [len(positions)]
    return list(zip(starts, starts[1:]))


def test_simple_template_trains_only_the_assistant_reply_and_eos(tokenizer):
    messages = CHATS[0]["messages"]
    tokens, targets = SimpleChatTemplate().encode(messages, tokenizer)
    assert tokens[0] == tokenizer.bos_id and tokens[-1] == tokenizer.eos_id
    assert tokenizer.decode(tokens[1:-1].tolist()) == "".join(
        f"{m['role']}:\n{m['content']}\n\n" for m in messages)
    assert tokenizer.decode(tokens[targets][:-1].tolist()) == messages[2]["content"] + "\n\n"
    assert tokens[targets][-1] == tokenizer.eos_id
    labels = sample_labels(tokens, targets)
    assert labels[-1] == IGNORE_INDEX
    assert (labels[:-1] == torch.where(torch.from_numpy(targets[1:]), torch.from_numpy(tokens[1:]),
                                       IGNORE_INDEX).numpy()).all()


TEMPLATE = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
            "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def tokenizer_assets(tmp_path, **templates):
    """A copy of the embedded tokenizer with chat templates written beside it: ``jinja`` (chat_template.jinja),
    ``json`` (chat_template.json), ``config`` (the chat_template key of tokenizer_config.json)."""
    assets = tmp_path / "tokenizer"
    shutil.copytree(embedded_assets_dir() / "tokenizer", assets)
    if "jinja" in templates:
        (assets / "chat_template.jinja").write_text(templates["jinja"])
    if "json" in templates:
        (assets / "chat_template.json").write_text(json.dumps({"chat_template": templates["json"]}))
    if "config" in templates:
        config = json.loads((assets / "tokenizer_config.json").read_text())
        config["chat_template"] = templates["config"]
        (assets / "tokenizer_config.json").write_text(json.dumps(config))
    return assets


@pytest.mark.parametrize("where", ["jinja", "json", "config"])
def test_tokenizer_chat_template_from_hf_assets(tokenizer, tmp_path, where):
    """The template from chat_template.jinja, chat_template.json or tokenizer_config.json, each alone: prompts
    are not targets, each reply and its EOS are."""
    assets = tokenizer_assets(tmp_path, **{where: TEMPLATE})
    messages = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"},
                {"role": "user", "content": "and 3 + 3?"}, {"role": "assistant", "content": "6"}]
    template = TokenizerChatTemplate(assets)
    assert template.path.name == {"jinja": "chat_template.jinja", "json": "chat_template.json",
                                  "config": "tokenizer_config.json"}[where]
    tokens, targets = template.encode(messages, tokenizer)
    assert tokenizer.decode(tokens.tolist()) == tokenizer.decode(tokenizer.encode(
        "<|begin_of_text|><user>2 + 2?<assistant>4<|end_of_text|><user>and 3 + 3?<assistant>6<|end_of_text|>"))
    eos = tokenizer.eos_id
    assert tokens[targets].tolist() == [*tokenizer.encode("4"), eos, *tokenizer.encode("6"), eos]
    assert tokens[0] == tokenizer.bos_id and tokens[-1] == tokenizer.eos_id


@pytest.mark.parametrize("present,winner", [
    (("jinja", "json", "config"), "jinja"), (("jinja", "config"), "jinja"), (("jinja", "json"), "jinja"),
    (("json", "config"), "json")])
def test_tokenizer_chat_template_precedence(tmp_path, present, winner):
    """chat_template.jinja before chat_template.json before tokenizer_config.json's key (transformers' order)."""
    assets = tokenizer_assets(tmp_path, **{where: f"from {where}" for where in present})
    messages = [{"role": "user", "content": "hi"}]
    assert TokenizerChatTemplate(assets).render(messages, add_generation_prompt=False) == f"from {winner}"


def test_tokenizer_template_needs_one(tmp_path):
    """None of the three places has a template (an empty .jinja file, a .json without the key): the error names
    all three."""
    assets = tokenizer_assets(tmp_path, jinja="")
    (assets / "chat_template.json").write_text(json.dumps({"other": "x"}))
    with pytest.raises(ValueError) as error:
        TokenizerChatTemplate(assets)
    message = str(error.value)
    assert message.startswith(f"curriculum.chat_template = 'tokenizer': no chat template in {assets}")
    config_key = f"the chat_template key of {assets / 'tokenizer_config.json'}"
    for name in ("chat_template.jinja", "chat_template.json", config_key):
        assert name in message
    assert message.endswith("allowed: 'simple', or a tokenizer that ships one of them")
    with pytest.raises(ValueError, match=r"curriculum.chat_template = 'tokenizer': no chat template in .*; "
                                         r"allowed: 'simple'"):
        TokenizerChatTemplate(embedded_assets_dir() / "tokenizer")


def test_packed_rows_keep_samples_whole_and_apart(tokenizer, sft_files):
    """Every row: segments (positions restarting at 0) are whole samples ending in EOS, or padding; TorchTitan's
    block_causal document mask on the row allows exactly the same-segment pairs; labels never cross a segment
    and prompts are never labeled. Over-long samples and the one without a reply are dropped and counted."""
    dataloader = sft_loader(tokenizer, sft_files)
    samples = encoded_samples(tokenizer)
    seen = set()
    iterator = iter(dataloader)
    for _ in range(6):
        inputs, labels = next(iterator)
        assert inputs["input"].shape == inputs["positions"].shape == labels.shape == (2, SEQ_LEN)
        for row in range(2):
            tokens, positions, row_labels = inputs["input"][row], inputs["positions"][row], labels[row]
            spans = segments(positions)
            owner = torch.empty(SEQ_LEN, dtype=torch.long)
            for k, (start, end) in enumerate(spans):
                owner[start:end] = k
                piece = tuple(tokens[start:end].tolist())
                assert piece[-1] == tokenizer.eos_id
                if end - start > 1:
                    assert piece in samples, "every multi-token segment is one whole encoded sample"
                    seen.add(samples[piece])
                else:
                    assert row_labels[start] == IGNORE_INDEX  # padding
                assert row_labels[end - 1] == IGNORE_INDEX
                trained = (row_labels[start:end - 1] != IGNORE_INDEX).nonzero().flatten() + start
                assert torch.equal(row_labels[trained], tokens[trained + 1])
            mask_mod = document_mask_mod(tokens[None], tokenizer.eos_id)
            q, kv = torch.meshgrid(torch.arange(SEQ_LEN), torch.arange(SEQ_LEN), indexing="ij")
            allowed = mask_mod(torch.zeros_like(q), torch.zeros_like(q), q, kv)
            assert torch.equal(allowed, owner[q] == owner[kv])
    metrics = dataloader.metrics(step=1)
    dropped = metrics["curriculum/sft_dropped_samples"]
    assert dropped >= 1 and not any(name in seen for name in ("chat 3", "chat 7", "chat 12", "chat 9"))
    assert metrics["curriculum/tokens_seen/chat"] > 0 and metrics["curriculum/tokens_seen/qa"] > 0


def test_over_long_samples_are_counted_exactly(tokenizer, sft_files):
    """Only chat, 3 epochs' worth of rows: the 3 over-long samples and the reply-less one are dropped each epoch."""
    dataloader = sft_loader(tokenizer, sft_files, phases=[{"start": 0, "end": 1, "start_weights": {"chat": 1}}])
    dataset = dataloader.dataset
    iterator = iter(dataloader)
    next(iterator)
    while dataset.cursors[0].epoch < 3:
        next(iterator)
    epochs_done, position = dataset.cursors[0].epoch, dataset.cursors[0].position
    share = [int(i) for i in dataset.cursors[0].share(epochs_done)[:position]]
    dropped_now = sum(i in (3, 7, 9, 12) for i in share)
    assert dataloader.metrics(step=1)["curriculum/sft_dropped_samples"] == 4 * epochs_done + dropped_now


@torch.no_grad()  # FlexAttention has no CPU backward
def test_packed_forward_equals_each_sample_alone(tokenizer, sft_files):
    """A flex block_causal motif2 model on a packed row (masks from EOS, positions restarting) gives each sample the
    logits it gets alone: from the same weights with plain causal SDPA (a sample alone needs no document mask, and
    SDPA needs no flex compile per sample length)."""
    args = dataclasses.replace(motif2_args["debugmodel_flex_attn"], n_layers=2, max_seq_len=SEQ_LEN)
    torch.manual_seed(0)
    model = Motif2Model(args)
    with torch.no_grad():
        model.init_weights()
    alone_model = Motif2Model(dataclasses.replace(args, attn_type="sdpa", attn_mask_type="causal"))
    alone_model.load_state_dict(model.state_dict())
    inputs, _ = next(iter(sft_loader(tokenizer, sft_files)))
    tokens, positions = inputs["input"][:1], inputs["positions"][:1]
    with torch.no_grad():
        packed = model(tokens, attention_masks=model.get_attention_masks(tokens, tokenizer), positions=positions)
    spans = [(s, e) for s, e in segments(positions[0]) if e - s > 1]
    assert len(spans) >= 2
    for start, end in spans:
        with torch.no_grad():
            alone = alone_model(tokens[:, start:end])
        torch.testing.assert_close(packed[:, start:end], alone, rtol=1e-4, atol=1e-4)


def test_sft_loader_resumes_exactly(tokenizer, sft_files):
    reference = [next(it) for it in [iter(sft_loader(tokenizer, sft_files))] for _ in range(8)]
    first = sft_loader(tokenizer, sft_files)
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    resumed = sft_loader(tokenizer, sft_files)
    resumed.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    iterator = iter(resumed)
    for inputs, labels in reference[3:]:
        got_inputs, got_labels = next(iterator)
        assert torch.equal(got_inputs["input"], inputs["input"])
        assert torch.equal(got_inputs["positions"], inputs["positions"])
        assert torch.equal(got_labels, labels)


def test_sft_needs_a_block_causal_model(tokenizer, sft_files):
    with pytest.raises(ValueError, match=r"curriculum.mode = 'sft' packs several samples per row .* flavor "
                                         r"'debugmodel' has attn_mask_type 'causal'"):
        sft_loader(tokenizer, sft_files, flavor="debugmodel")


def test_sft_refuses_a_sequence_length_ramp(tokenizer, sft_files):
    with pytest.raises(ValueError, match=r"curriculum.seq_len_ramp_start = 48; allowed: 0 with curriculum.mode = "
                                         r"'sft'"):
        sft_loader(tokenizer, sft_files, seq_len_ramp_start=48, seq_len_ramp_steps=[1, 4])


def test_sft_refuses_context_parallelism(tokenizer, sft_files):
    with pytest.raises(ValueError, match=re.escape(
            "curriculum.mode = 'sft' with parallelism.context_parallel_degree = 2: packed SFT rows give the model "
            "per-sample positions, and TorchTitan 0.2.2's context parallelism neither shards them nor lets them "
            "through (it passes its own 0..seq_len-1 positions); allowed with curriculum.mode 'sft': "
            "context_parallel_degree = 1")):
        sft_loader(tokenizer, sft_files, "--parallelism.context_parallel_degree", "2")


def test_sft_record_without_messages_is_named(tokenizer, tmp_path):
    (tmp_path / "chat.jsonl").write_text(json.dumps({"text": "plain"}) + "\n" + json.dumps(CHATS[0]) + "\n")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(c) + "\n" for c in QA))
    dataloader = sft_loader(tokenizer, tmp_path, phases=[{"start": 0, "end": 1, "start_weights": {"chat": 1}}])
    with pytest.raises(ValueError, match=r"domain 'chat': an SFT record needs 'messages' or 'prompt' and "
                                         r"'response'"):
        for _ in range(3):
            next(iter(dataloader))
