"""Tiny local lm-eval tasks (YAML over a jsonl file, loaded offline through HF datasets' json builder) and the
direct computations from a model's own logits that the motif_titan lm-eval model is checked against."""

import json
from pathlib import Path

import torch

from motif_titan.model import Motif2Model


def write_task(folder: Path, name: str, records: list[dict], config: str) -> str:
    """``folder/name.yaml`` over ``folder/name.jsonl`` (its ``test`` split); ``config`` adds the task's own lines."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {data}\n"
        f"  cache_dir: {folder / 'hf_datasets_cache'}\n"
        "test_split: test\n" + config
    )
    return name


def write_multiple_choice_task(folder: Path, name: str, items: list[dict]) -> str:
    """Items {"question", "choices", "answer" (index)}: lm-eval scores " " + choice after the question."""
    return write_task(folder, name, items, (
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    ))


def write_generation_task(folder: Path, name: str, items: list[dict], until: list[str], max_gen_toks: int) -> str:
    """Items {"prompt", "target"}: greedy generation from the prompt, exact match against the target."""
    return write_task(folder, name, items, (
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{target}}"\n'
        f"generation_kwargs:\n  until: {json.dumps(until)}\n  max_gen_toks: {max_gen_toks}\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    ))


@torch.no_grad()
def direct_loglikelihood(model: Motif2Model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """log p(continuation | context) and whether it is the argmax at every position, from one full forward in
    float64 log-softmax. Tokens as lm-eval splits a pair: the context's trailing spaces move to the continuation,
    BOS + context + continuation is encoded whole, the continuation being what follows the encoded BOS + context
    (BOS alone for an empty context)."""
    if context:
        stripped = context.rstrip()
        context, continuation = stripped, context[len(stripped):] + continuation
        whole = tokenizer.encode(context + continuation, add_bos=True, add_eos=False)
        n_context = len(tokenizer.encode(context, add_bos=True, add_eos=False))
    else:
        whole = [tokenizer.bos_id] + tokenizer.encode(continuation, add_bos=False, add_eos=False)
        n_context = 1
    log_probs = model(torch.tensor([whole]))[0].double().log_softmax(dim=-1)
    targets = torch.tensor(whole[n_context:])
    predicted = log_probs[n_context - 1:len(whole) - 1]
    return predicted.gather(-1, targets[:, None]).sum().item(), bool((predicted.argmax(-1) == targets).all())


@torch.no_grad()
def direct_greedy_tokens(model: Motif2Model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation by repeated full forwards (no cache): argmax of the last position, appended."""
    tokens = list(prompt)
    for _ in range(max_new_tokens):
        tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


def direct_generation(model: Motif2Model, tokenizer, prompt: str, max_new_tokens: int, until: list[str]) -> str:
    """What generate_until must answer: the greedy continuation of BOS + prompt, up to eos, cut before the first
    stop string."""
    tokens = direct_greedy_tokens(model, tokenizer.encode(prompt, add_bos=True, add_eos=False), max_new_tokens)
    if tokenizer.eos_id in tokens:
        tokens = tokens[:tokens.index(tokenizer.eos_id)]
    text = tokenizer.decode(tokens)
    cuts = [text.index(stop) for stop in until if stop in text]
    return text[:min(cuts)] if cuts else text
