"""lm-eval on Motif-2 (motif_titan.eval): the checkpoint loader, the key/value-cache decoding against full forwards,
the lm-eval model's log-likelihoods and generations against direct computations from the model's logits, and the
front door's metrics on tiny local tasks, all on CPU with a freshly initialized debug model."""

import json
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from helpers.eval_tasks import (
    direct_generation,
    direct_greedy_tokens,
    direct_loglikelihood,
    write_generation_task,
    write_multiple_choice_task,
)
from lm_eval.api.instance import Instance

from motif_titan.eval import Motif2LM, greedy_generate
from motif_titan.eval import __main__ as eval_cli
from motif_titan.model import Motif2Model, motif2_args

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The debug model's tiny matmuls run several times faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_model(flavor: str, seed: int, **overrides) -> Motif2Model:
    torch.manual_seed(seed)
    args = motif2_args[flavor]
    if overrides:
        import dataclasses
        args = dataclasses.replace(args, **overrides)
    model = Motif2Model(args)
    with torch.no_grad():
        model.init_weights()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def reference():
    """The debug model the checkpoint holds, as built in this process (the direct computations use it)."""
    return _random_model("debugmodel", seed=7)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, reference) -> str:
    """A TorchTitan-style full training checkpoint of ``reference``: model entries by FQN plus optimizer and
    train-state entries (which the reader skips), no model_args.json."""
    step = tmp_path_factory.mktemp("eval_run") / "checkpoint" / "step-3"
    state = dict(reference.state_dict())
    state["optimizer"] = {"state": {"tok_embeddings.weight": {"exp_avg": torch.ones(4), "step": torch.tensor(3.0)}}}
    state["train_state"] = {"step": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(step), no_dist=True)
    return str(step)


@pytest.fixture(scope="module")
def lm(checkpoint) -> Motif2LM:
    return Motif2LM(checkpoint=checkpoint, batch_size=2, device="cpu")


def test_training_checkpoint_loads_the_saved_model_with_its_flavor_settings(lm, reference):
    loaded = lm.model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key
    args = lm.model.model_args
    assert (args.rope_theta, args.max_seq_len) == (motif2_args["debugmodel"].rope_theta, 2048)  # not in the tensors
    assert torch.equal(lm.model.rope_cache, reference.rope_cache)
    assert lm.tokenizer.get_vocab_size() == args.vocab_size  # the embedded tokenizer (no tokenizer in the folder)


@pytest.mark.parametrize("flavor, overrides", [
    ("debugmodel", {}),  # GDA 4:1, auto value path (joint noise, split signal)
    ("debugmodel_diffattn", {"gda_value_path": "joint"}),  # Differential Attention pairs, tied head
])
def test_cached_greedy_decoding_matches_full_forwards(flavor, overrides):
    """Prompts of different lengths decoded in one left-padded batch: every generated position's logits equal the
    full forward of the same sequence (float32, atol 1e-5), and the tokens are the argmax of repeated full
    forwards."""
    model = _random_model(flavor, seed=3, **overrides)
    prompts = [[5, 9, 100, 7, 3], [11], [400, 401, 402, 403, 404, 405, 406, 407, 408]]
    generations = greedy_generate(model, prompts, max_new_tokens=5, keep_logits=True)
    for prompt, generation in zip(prompts, generations):
        assert len(generation.tokens) == 5
        sequence = list(prompt)
        for token, logits in zip(generation.tokens, generation.logits):
            full = model(torch.tensor([sequence]))[0, -1]
            torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)
            assert token == int(full.argmax())
            sequence.append(token)


def test_greedy_generation_stops_at_eos():
    model = _random_model("debugmodel", seed=3)
    prompt = [5, 9, 100]
    free = direct_greedy_tokens(model, prompt, 5)
    (generation,) = greedy_generate(model, [prompt], max_new_tokens=5, eos_id=free[2])
    assert generation.tokens == free[:free.index(free[2]) + 1]


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_loglikelihood_equals_the_direct_float_computation(lm, reference):
    tokenizer = lm.tokenizer
    pairs = [("The sky is", " blue"), ("Two plus two is", " four, not five."), ("", "An empty context"),
             ("x", " y"), ("trailing space ", "moves")]
    results = lm.loglikelihood(_requests("loglikelihood", pairs), disable_tqdm=True)
    for pair, (logprob, is_greedy) in zip(pairs, results):
        expected, expected_greedy = direct_loglikelihood(reference, tokenizer, *pair)
        assert logprob == pytest.approx(expected, abs=1e-4), pair
        assert is_greedy == expected_greedy, pair
    # the model's own greedy continuation (as tokens: random-model text need not re-tokenize the same) is greedy
    context = tokenizer.encode("The sky is", add_bos=True, add_eos=False)
    greedy = direct_greedy_tokens(reference, context, 3)
    ((logprob, is_greedy),) = lm._loglikelihood_tokens([(("The sky is", "..."), context, greedy)], disable_tqdm=True)
    full = reference(torch.tensor([context + greedy]))[0].double().log_softmax(-1)
    assert is_greedy
    assert logprob == pytest.approx(sum(full[len(context) - 1 + k, t].item() for k, t in enumerate(greedy)), abs=1e-4)


def test_loglikelihood_rolling_scores_every_token_once_in_windows(checkpoint, reference, lm):
    """max_length 8, a 16-token text: windows [BOS, t0..t6] -> t0..t7 and [t7..t14] -> t8..t15 (lm-eval's rolling
    windows); a text that fits is one window after BOS."""
    short = Motif2LM(checkpoint=checkpoint, batch_size=3, max_length=8, device="cpu")
    tokenizer = lm.tokenizer
    long_text = "one two three four five six seven eight nine ten eleven twelve"
    tokens = tokenizer.encode(long_text, add_bos=False, add_eos=False)[:16]
    long_text = tokenizer.decode(tokens)
    assert tokenizer.encode(long_text, add_bos=False, add_eos=False) == tokens

    def log_probs(inputs: list[int], targets: list[int]) -> float:
        lp = reference(torch.tensor([inputs]))[0].double().log_softmax(-1)[-len(targets):]
        return lp.gather(-1, torch.tensor(targets)[:, None]).sum().item()

    bos = tokenizer.bos_id
    expected_long = log_probs([bos] + tokens[:7], tokens[:8]) + log_probs(tokens[7:15], tokens[8:16])
    short_text = "a b c"
    short_tokens = tokenizer.encode(short_text, add_bos=False, add_eos=False)
    expected_short = log_probs([bos] + short_tokens[:-1], short_tokens)
    got = short.loglikelihood_rolling(_requests("loglikelihood_rolling", [(long_text,), (short_text,)]),
                                      disable_tqdm=True)
    assert got == pytest.approx([expected_long, expected_short], abs=1e-4)


def test_generate_until_matches_repeated_full_forwards(lm, reference):
    tokenizer = lm.tokenizer
    free = direct_generation(reference, tokenizer, "Hello", 8, [])
    stop = next((free[i:i + 2] for i in range(2, len(free) - 2) if free[i:i + 2].strip()), None)
    cases = [("Hello", {"until": [stop] if stop else [], "max_gen_toks": 8}),
             ("The answer is", {"until": ["\n"], "max_gen_toks": 5}),
             ("def f(x):", {"until": ["\n", "zz"], "max_gen_toks": 5, "do_sample": False})]
    got = lm.generate_until(_requests("generate_until", cases), disable_tqdm=True)
    for (prompt, kwargs), text in zip(cases, got):
        assert text == direct_generation(reference, tokenizer, prompt, kwargs["max_gen_toks"], kwargs["until"])
    if stop:
        assert got[0] == free[:free.index(stop)]  # cut before the stop string


def test_generate_until_refuses_sampling(lm):
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until(_requests("generate_until", [("Hi", {"do_sample": True, "temperature": 0.7})]),
                          disable_tqdm=True)


def test_front_door_metrics_equal_the_direct_computation(tmp_path, monkeypatch, capsys, checkpoint, reference, lm):
    """``python -m motif_titan.eval`` (in process) on a multiple-choice task and a generation task: acc, acc_norm
    and exact_match equal what the model's own logits give, computed directly here. Answers are set so that half
    the items are right: both outcomes are exercised."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tokenizer = lm.tokenizer
    questions = [("The sky is", ["blue", "green", "loud"]), ("Two plus two is", ["four", "five"]),
                 ("def f(x): return", ["x", "y z", "1"]), ("Water is", ["wet", "dry", "a liquid"])]
    items, acc, acc_norm = [], [], []
    for n, (question, choices) in enumerate(questions):
        lls = [direct_loglikelihood(reference, tokenizer, question, " " + c)[0] for c in choices]
        best = max(range(len(choices)), key=lls.__getitem__)
        answer = best if n % 2 == 0 else (best + 1) % len(choices)
        items.append({"question": question, "choices": choices, "answer": answer})
        acc.append(best == answer)
        normed = [ll / len(c) for ll, c in zip(lls, choices)]
        acc_norm.append(max(range(len(choices)), key=normed.__getitem__) == answer)
    until, max_gen_toks = ["\n"], 4
    answers = {}
    for prompt in ("Q: one plus one is", "Hello", "The cat", "x = ", "Once upon"):
        answers[prompt] = direct_generation(reference, tokenizer, prompt, max_gen_toks, until)
        if sum(map(bool, answers.values())) == 2:
            break
    (right, right_answer), (wrong, _) = [(p, a) for p, a in answers.items() if a]  # non-empty answers
    generation_items = [{"prompt": right, "target": right_answer}, {"prompt": wrong, "target": "not what it says"}]
    tasks = tmp_path / "tasks"
    write_multiple_choice_task(tasks, "tiny_mc", items)
    write_generation_task(tasks, "tiny_gen", generation_items, until, max_gen_toks)
    out = tmp_path / "results.json"
    assert eval_cli.main(["--checkpoint", checkpoint, "--tasks", "tiny_mc,tiny_gen", "--include-path", str(tasks),
                          "--batch-size", "3", "--limit", "5", "--device", "cpu", "--output", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert results["tiny_mc"]["acc,none"] == pytest.approx(sum(acc) / len(acc))
    assert results["tiny_mc"]["acc_norm,none"] == pytest.approx(sum(acc_norm) / len(acc_norm))
    assert results["tiny_gen"]["exact_match,none"] == pytest.approx(0.5)
    printed = capsys.readouterr().out
    assert "tiny_mc" in printed and "exact_match" in printed and f"wrote {out}" in printed


def test_bad_arguments_are_named_before_any_weight_is_read(tmp_path, capsys, checkpoint):
    assert eval_cli.main(["--checkpoint", str(tmp_path / "missing"), "--tasks", "x"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["--checkpoint", checkpoint, "--tasks", "x", "--dtype", "float16"])
    assert exit_info.value.code == 2 and "--dtype" in capsys.readouterr().err
    assert eval_cli.main(["--checkpoint", checkpoint, "--tasks", "x", "--include-path", str(tmp_path / "no")]) == 2
    assert "--include-path" in capsys.readouterr().err
    assert eval_cli.main(["--checkpoint", checkpoint, "--tasks", "x", "--output", str(tmp_path / "a" / "b.json")]) == 2
    assert "--output" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"dtype = 'float16'"):
        Motif2LM(checkpoint=checkpoint, dtype="float16")
    with pytest.raises(ValueError, match=r"checkpoint = .*no such directory"):
        Motif2LM(checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"batch_size = 'auto'"):
        Motif2LM(checkpoint=checkpoint, batch_size="auto")


def test_hf_folder_loads_with_its_config_and_tokenizer(tmp_path):
    """An HF safetensors folder (Motif names, tied head dropped, config.json, tokenizer files): the model loads
    with the config's RoPE theta, the folder's tokenizer is the default, and log-likelihoods are the model's."""
    import shutil

    from safetensors.torch import save_file

    from motif_titan.data.text_dataloader import embedded_assets_dir
    from motif_titan.model import Motif2StateDictAdapter
    from motif_titan.model.hf_config import to_hf_config

    reference = _random_model("debugmodel_diffattn", seed=5, rope_theta=12345.0)
    hf_state = Motif2StateDictAdapter(reference.model_args, None).to_hf(reference.state_dict())
    assert "lm_head.weight" not in hf_state  # tied
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(reference.model_args)))
    for file in (embedded_assets_dir() / "tokenizer").iterdir():
        shutil.copy(file, tmp_path / file.name)
    hf = Motif2LM(checkpoint=str(tmp_path), device="cpu")
    assert hf.tokenizer_path == tmp_path
    assert hf.model.model_args.rope_theta == 12345.0 and hf.model.model_args.enable_weight_tying
    for key, value in reference.state_dict().items():
        assert torch.equal(hf.model.state_dict()[key], value), key
    ((logprob, _),) = hf.loglikelihood(_requests("loglikelihood", [("The sky is", " blue")]), disable_tqdm=True)
    assert logprob == pytest.approx(direct_loglikelihood(reference, hf.tokenizer, "The sky is", " blue")[0], abs=1e-4)


def test_a_flavor_with_other_shapes_is_refused_naming_the_parameter(checkpoint):
    with pytest.raises(ValueError, match=r"flavor = 'debugmodel_diffattn'.*'layers\.0\.attention\.wq\.weight' has "
                                         r"shape \[320, 256\] in the checkpoint, \[256, 256\]"):
        Motif2LM(checkpoint=checkpoint, flavor="debugmodel_diffattn")
    with pytest.raises(ValueError, match=r"flavor = 'nope' is not a motif2 flavor"):
        Motif2LM(checkpoint=checkpoint, flavor="nope")
    flex_flavor = Motif2LM(checkpoint=checkpoint, flavor="debugmodel_flex_attn", device="cpu")
    assert flex_flavor.model.model_args.attn_type == "sdpa"
