"""The lm-eval model ``motif_titan``: a Motif-2 checkpoint run directly by motif_titan's model, no transformers or
vLLM in between.

``model_args``: ``checkpoint=PATH`` (a TorchTitan DCP step folder or an HF safetensors folder) and optionally
``flavor`` (a motif2 flavor whose shapes the checkpoint must have; default: the checkpoint's own shapes),
``dtype`` (float32 or bfloat16), ``device`` (default cuda when available, else cpu), ``batch_size``,
``tokenizer`` (a folder of HF tokenizer files, or "embedded" for the packaged one; default: the checkpoint folder
when it holds a tokenizer.json, else "embedded"), ``max_length`` (context window, default the model's
max_seq_len), ``max_gen_toks`` (default 256) and ``add_bos_token`` (default true: every context starts with the
tokenizer's BOS, as TorchTitan's training documents do).

Requests are batched by length (longest first). Log-likelihoods are right-padded full forwards (causal
attention keeps the padding out of every real position); the output head runs only on the scored positions, in
float32. Generation is greedy with a key/value cache (``motif_titan.eval.decoding``).
"""

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from motif_titan.titan_version import load_hf_tokenizer
from tqdm import tqdm

from motif_titan.data.text_dataloader import EMBEDDED, hf_assets_dir
from motif_titan.model import motif2_args
from motif_titan.checkpoint_io import open_checkpoint

from .decoding import final_hidden, greedy_generate
from .model_loading import load_model, parse_device, parse_dtype, resolve_model_args

logger = logging.getLogger(__name__)

# positions the output head and log-softmax take at a time (a 219,520-token vocabulary: 0.9 GB of fp32 logits)
_HEAD_CHUNK = 1024
# On CUDA, batch widths are rounded up to a multiple of this: SDPA's cuDNN backend builds a graph per new shape
# (CPU time on each call with a new shape), so batches of nearby lengths then share graphs
_CUDA_WIDTH_MULTIPLE = 64


def _positive_int(value, label: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())) \
            or int(value) < 1:
        raise ValueError(f"{label} = {value!r}; expected a positive integer")
    return int(value)


def _flag(value, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{label} = {value!r}; expected true or false")


def resolve_tokenizer_path(tokenizer: str | None, checkpoint: Path) -> Path:
    """The tokenizer folder: ``tokenizer`` ("embedded": the packaged one), or by default the checkpoint folder
    when it holds a tokenizer.json, else the packaged one."""
    if tokenizer is None:
        return checkpoint if (checkpoint / "tokenizer.json").is_file() else hf_assets_dir(EMBEDDED)
    path = hf_assets_dir(tokenizer)
    if not path.is_dir():
        raise ValueError(f"tokenizer = {tokenizer!r}: no such directory (a folder of HF tokenizer files, or "
                         f"{EMBEDDED!r} for the packaged tokenizer)")
    return path


@register_model("motif_titan")
class Motif2LM(TemplateLM):
    """lm-eval's LM interface over a Motif-2 checkpoint (see the module docstring for ``model_args``)."""

    def __init__(
        self,
        checkpoint: str,
        flavor: str | None = None,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int | str = 1,
        tokenizer: str | None = None,
        max_length: int | str | None = None,
        max_gen_toks: int | str = 256,
        add_bos_token: bool | str = True,
        max_batch_size: int | None = None,  # lm-eval passes it; batches here have a fixed size
    ):
        super().__init__()
        # every argument is checked before a weight is read
        path = Path(str(checkpoint))
        if not path.is_dir():
            raise ValueError(f"checkpoint = {str(checkpoint)!r}: no such directory (a TorchTitan DCP step folder or "
                             "an HF safetensors folder)")
        if flavor is not None and str(flavor) not in motif2_args:
            raise ValueError(f"flavor = {flavor!r} is not a motif2 flavor; allowed: {sorted(motif2_args)}")
        torch_dtype = parse_dtype(str(dtype))
        self._device = parse_device(None if device is None else str(device))
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.max_gen_toks = _positive_int(max_gen_toks, "max_gen_toks")
        self.add_bos_token = _flag(add_bos_token, "add_bos_token")
        tokenizer_path = resolve_tokenizer_path(None if tokenizer is None else str(tokenizer), path)
        requested_length = None if max_length is None else _positive_int(max_length, "max_length")

        self.tokenizer = load_hf_tokenizer(str(tokenizer_path))
        self.tokenizer_path = tokenizer_path
        self._eot_id = self.tokenizer.eos_id if self.tokenizer.eos_id is not None else self.tokenizer.bos_id
        if self._eot_id is None:
            raise ValueError(f"tokenizer {str(tokenizer_path)!r} has neither an eos nor a bos token")

        reader = open_checkpoint(path, label="checkpoint")
        args = resolve_model_args(reader, None if flavor is None else str(flavor))
        if self.tokenizer.get_vocab_size() > args.vocab_size:
            raise ValueError(f"tokenizer {str(tokenizer_path)!r} has {self.tokenizer.get_vocab_size()} tokens, more "
                             f"than the model's vocab_size {args.vocab_size}; pass the checkpoint's tokenizer=")
        if tokenizer is None and self.tokenizer.get_vocab_size() != args.vocab_size:
            logger.warning("tokenizer: %s (the default) has %d tokens, the model %d; pass tokenizer= if the checkpoint "
                           "was trained with another", tokenizer_path, self.tokenizer.get_vocab_size(), args.vocab_size)
        if requested_length is not None and requested_length > args.max_seq_len:
            raise ValueError(f"max_length = {requested_length} exceeds the model's max_seq_len {args.max_seq_len}")
        self._max_length = requested_length or args.max_seq_len  # max_gen_toks is checked against it per request
        self.model = load_model(reader, args, self._device, torch_dtype)
        self._info = {"checkpoint": str(path), "flavor": flavor, "dtype": str(dtype), "tokenizer": str(tokenizer_path),
                      "max_length": self._max_length,
                      "model_num_parameters": sum(p.numel() for p in self.model.parameters())}

    # -- what TemplateLM asks for ---------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self._eot_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context becomes: BOS (the start of every training document), else EOS."""
        return self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self._eot_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer_path)

    def get_model_info(self) -> dict:
        return dict(self._info)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        add_bos = self.add_bos_token if add_special_tokens is None else add_special_tokens
        return self.tokenizer.encode(string, add_bos=add_bos and self.tokenizer.bos_id is not None, add_eos=False)

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    # -- batching -------------------------------------------------------------------------------------------------
    def _batches(self, indices: Sequence[int], length: Callable[[int], int]) -> list[list[int]]:
        """``indices`` sorted by ``length``, longest first, cut into batches of ``batch_size``."""
        order = sorted(indices, key=length, reverse=True)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _score(self, hidden: torch.Tensor, targets: list[int]) -> tuple[float, bool]:
        """(sum of log p(target), every target the argmax) from the final hidden states (n, dim) that predict
        ``targets``: the output head and log-softmax in float32, ``_HEAD_CHUNK`` positions at a time."""
        total, greedy = 0.0, True
        target = torch.as_tensor(targets, dtype=torch.long, device=hidden.device)
        for h, t in zip(hidden.split(_HEAD_CHUNK), target.split(_HEAD_CHUNK)):
            log_probs = torch.log_softmax(self.model.output(h).float(), dim=-1)
            total += log_probs.gather(-1, t[:, None]).sum().item()
            greedy = greedy and bool((log_probs.argmax(dim=-1) == t).all())
        return total, greedy

    # -- requests -------------------------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, cache_as: str | None = "loglikelihood"
                              ) -> list[tuple[float, bool]]:
        """(log p(continuation | context), greedy) of ``(request key, context tokens, continuation tokens)`` items;
        contexts longer than ``max_length`` lose their oldest tokens."""
        inputs, continuations = [], []
        for _, context, continuation in requests:
            if len(continuation) > self.max_length:
                raise ValueError(f"a continuation of {len(continuation)} tokens exceeds max_length {self.max_length}")
            whole = (list(context) + list(continuation))[-(self.max_length + 1):]
            inputs.append(whole[:-1])
            continuations.append(list(continuation))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        batches = self._batches(range(len(requests)), lambda i: len(inputs[i]))
        for batch in tqdm(batches, desc="motif_titan loglikelihood", disable=disable_tqdm):
            width = max(len(inputs[i]) for i in batch)
            if self.device.type == "cuda":
                width = min(-(-width // _CUDA_WIDTH_MULTIPLE) * _CUDA_WIDTH_MULTIPLE, self.model.model_args.max_seq_len)
            tokens = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                tokens[row, :len(inputs[i])] = torch.as_tensor(inputs[i], dtype=torch.long)
            hidden = final_hidden(self.model, tokens.to(self.device))
            for row, i in enumerate(batch):
                n, end = len(continuations[i]), len(inputs[i])
                results[i] = self._score(hidden[row, end - n:end], continuations[i]) if n else (0.0, True)
                if cache_as is not None and requests[i][0] is not None:
                    self.cache_hook.add_partial(cache_as, requests[i][0], results[i])
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole string after the prefix token, scored in windows of ``max_length``
        (lm-eval's rolling windows: every token predicted once, each window with the most context that fits)."""
        windows, owner = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string, add_special_tokens=False)
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                    context_len=1)):
                windows.append((None, context, continuation))
                owner.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm, cache_as=None)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, scores):
            totals[index] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _generation_settings(self, gen_kwargs: dict) -> tuple[list[str], int]:
        """(stop strings, max new tokens) of a request's generation kwargs; sampling is refused (greedy only)."""
        kwargs = dict(gen_kwargs or {})
        if kwargs.get("do_sample"):
            raise ValueError(f"generate_until: motif_titan decodes greedily, the task asks for sampling "
                             f"(generation_kwargs {gen_kwargs})")
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen_toks = _positive_int(kwargs.get("max_gen_toks", self.max_gen_toks), "max_gen_toks")
        if max_gen_toks >= self.max_length:
            raise ValueError(f"max_gen_toks = {max_gen_toks} leaves no room for a prompt in max_length "
                             f"{self.max_length}")
        return until, max_gen_toks

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut before the first stop string (``until``) or the eos token, of at most
        ``max_gen_toks`` tokens; prompts keep their last max_length - max_gen_toks tokens."""
        groups: dict[str, list[int]] = {}
        for index, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(index)
        results: list[str | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), desc="motif_titan generate_until", disable=disable_tqdm)
        for indices in groups.values():
            until, max_gen_toks = self._generation_settings(requests[indices[0]].args[1])
            prompts = {}
            for i in indices:
                tokens = self.tok_encode(requests[i].args[0]) or [self.prefix_token_id]
                prompts[i] = tokens[-(self.max_length - max_gen_toks):]
            for batch in self._batches(indices, lambda i, prompts=prompts: len(prompts[i])):
                def should_stop(row: int, generated: list[int], until: list[str] = until) -> bool:
                    text = self.tok_decode(generated)
                    return any(stop in text for stop in until)

                generations = greedy_generate(self.model, [prompts[i] for i in batch], max_gen_toks,
                                              eos_id=self.eot_token_id, should_stop=should_stop if until else None)
                for i, generation in zip(batch, generations):
                    tokens = generation.tokens
                    if tokens and tokens[-1] == self.eot_token_id:
                        tokens = tokens[:-1]
                    text = self.tok_decode(tokens)
                    cuts = [text.index(stop) for stop in until if stop in text]
                    results[i] = text[:min(cuts)] if cuts else text
                    self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
                progress.update(len(batch))
        progress.close()
        return results
