"""SFT samples: chat template, prompt labels ignored, packing into rows with document boundaries.

A sample is a record with ``messages`` (a list of {role, content}) or ``prompt`` and ``response`` fields (a
user and an assistant message); the field names are set per domain.

Chat templates (``curriculum.chat_template``):

* ``"simple"``: ``BOS`` then, for every message, ``"{role}:\\n"`` followed by ``"{content}\\n\\n"``, then ``EOS``.
  Each piece is tokenized on its own. Targets: the content pieces of assistant messages, and the final EOS.
* ``"tokenizer"``: the tokenizer's Jinja chat template in ``model.hf_assets_path`` -- ``chat_template.jinja``,
  else ``chat_template.json``, else the ``chat_template`` key of ``tokenizer_config.json`` (see
  :class:`TokenizerChatTemplate`), rendered like ``transformers`` does (``messages``, ``bos_token``,
  ``eos_token``, ``add_generation_prompt``).
  The text added by each message is tokenized on its own; for an assistant message, the generation prompt
  (header) is prompt and the rest is target. EOS is appended when the template does not end with it.

Labels: position i predicts token i + 1 when that token is a target, else -100; the last position of a sample
(its EOS) predicts nothing, so no label crosses into the next sample.

Packing (:class:`SFTRowPacker`): samples fill a row of ``seq_len`` positions in order; a sample that does not
fit in what is left of the row starts the next row, and the rest of the row is padding (EOS tokens, label -100,
position 0). Positions restart at 0 for every sample. Every sample ends with EOS, which is where TorchTitan's
``block_causal`` flex masks (``get_document_mask_mod``) end a document: attention never crosses samples.
Samples longer than ``seq_len`` are never truncated: they are dropped and counted (the metric
``curriculum/sft_dropped_samples``), as are samples without an assistant message.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from .curriculum import DomainSpec

IGNORE_INDEX = -100


def conversation(record: Any, domain: DomainSpec) -> list[dict[str, str]]:
    """The messages of one SFT record."""
    if isinstance(record, dict) and domain.messages_field in record:
        messages = record[domain.messages_field]
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise ValueError(f"domain {domain.name!r}: {domain.messages_field!r} must be a list of "
                             f"{{role, content}} strings, got {messages!r:.200}")
        return messages
    if isinstance(record, dict) and domain.prompt_field in record and domain.response_field in record:
        return [{"role": "user", "content": str(record[domain.prompt_field])},
                {"role": "assistant", "content": str(record[domain.response_field])}]
    raise ValueError(f"domain {domain.name!r}: an SFT record needs {domain.messages_field!r} or "
                     f"{domain.prompt_field!r} and {domain.response_field!r}, got {str(record)[:200]!r}")


class SimpleChatTemplate:
    def encode(self, messages: list[dict[str, str]], tokenizer) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and, per token, whether it is a target."""
        tokens, targets = [tokenizer.bos_id], [False]
        for message in messages:
            header = tokenizer.encode(f"{message['role']}:\n", add_bos=False, add_eos=False)
            body = tokenizer.encode(f"{message['content']}\n\n", add_bos=False, add_eos=False)
            tokens += header + body
            targets += [False] * len(header) + [message["role"] == "assistant"] * len(body)
        tokens.append(tokenizer.eos_id)
        targets.append(messages[-1]["role"] == "assistant")
        return np.asarray(tokens, dtype=np.int64), np.asarray(targets, dtype=bool)


CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
"""Where the tokenizer's chat template is looked for in ``model.hf_assets_path``, first found wins."""


def _default_template(template: Any) -> str | None:
    """A template string, or the "default" one of a list of named templates ({name, template})."""
    if isinstance(template, list):
        template = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}.get("default")
    return template if isinstance(template, str) and template else None


def read_chat_template(hf_assets_path: str | Path) -> tuple[str, Path]:
    """The tokenizer's chat template and the file it came from, in the order of ``CHAT_TEMPLATE_FILES``.

    The order is transformers': a tokenizer's ``from_pretrained`` reads a separate ``chat_template.jinja`` and lets
    it take precedence over (clobber) the ``chat_template`` key of ``tokenizer_config.json``; ``chat_template.json``
    (``{"chat_template": "..."}``) is the older file that transformers' processors read, and a processor's
    template replaces its tokenizer's, so it comes before the config key. transformers' tokenizer never reads the
    ``.json`` file and prefers the ``.jinja`` one, so the ``.jinja`` file comes first here when both are present.
    (Motif-2-12.7B-Instruct ships ``chat_template.jinja`` and no key in ``tokenizer_config.json``.)"""
    assets = Path(hf_assets_path)
    jinja_path, json_path, config_path = (assets / name for name in CHAT_TEMPLATE_FILES)
    if jinja_path.is_file() and (template := jinja_path.read_text()):
        return template, jinja_path
    for path in (json_path, config_path):
        if path.is_file():
            try:
                content = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"curriculum.chat_template = 'tokenizer': {path} is not JSON: {error}") from error
            template = _default_template(content.get("chat_template") if isinstance(content, dict) else None)
            if template:
                return template, path
    raise ValueError(f"curriculum.chat_template = 'tokenizer': no chat template in {assets}: looked for "
                     f"{jinja_path}, {json_path} (key chat_template) and the chat_template key of {config_path}; "
                     "allowed: 'simple', or a tokenizer that ships one of them")


class TokenizerChatTemplate:
    """The tokenizer's own Jinja chat template (see :func:`read_chat_template` for where it is read from); BOS and
    EOS text from ``tokenizer_config.json``."""

    def __init__(self, hf_assets_path: str | Path) -> None:
        template, self.path = read_chat_template(hf_assets_path)
        config_path = Path(hf_assets_path) / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        self.template = env.from_string(template)

        def token_text(value):
            return value.get("content") if isinstance(value, dict) else value

        self.special = {"bos_token": token_text(config.get("bos_token")) or "",
                        "eos_token": token_text(config.get("eos_token")) or ""}

    def render(self, messages, add_generation_prompt: bool) -> str:
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    **self.special)

    def encode(self, messages: list[dict[str, str]], tokenizer) -> tuple[np.ndarray, np.ndarray]:
        tokens: list[int] = []
        targets: list[bool] = []
        rendered = ""

        def add(text: str, target: bool) -> None:
            ids = tokenizer.encode(text, add_bos=False, add_eos=False)
            tokens.extend(ids)
            targets.extend([target] * len(ids))

        def extend(text: str, target: bool) -> None:
            nonlocal rendered
            if not text.startswith(rendered):
                raise ValueError("the tokenizer's chat template does not render conversations prefix by prefix")
            add(text[len(rendered):], target)
            rendered = text

        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                extend(self.render(messages[:i], add_generation_prompt=True), False)
            extend(self.render(messages[:i + 1], add_generation_prompt=False), message["role"] == "assistant")
        if not tokens or tokens[-1] != tokenizer.eos_id:
            tokens.append(tokenizer.eos_id)
            targets.append(messages[-1]["role"] == "assistant")
        return np.asarray(tokens, dtype=np.int64), np.asarray(targets, dtype=bool)


def sample_labels(tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Position i predicts tokens[i + 1] if it is a target; the last position predicts nothing."""
    labels = np.full(len(tokens), IGNORE_INDEX, dtype=np.int64)
    labels[:-1] = np.where(targets[1:], tokens[1:], IGNORE_INDEX)
    return labels


class SFTRowPacker:
    """Fills rows of ``row_len`` positions with whole samples (see the module docstring)."""

    def __init__(self, row_len: int, pad_id: int) -> None:
        self.row_len = row_len
        self.pad_id = pad_id
        self.pending: tuple[np.ndarray, np.ndarray, int] | None = None
        """A sample drawn for a row it did not fit in: (tokens, labels, domain)."""

    def pack_row(self, next_sample) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """Tokens, labels, positions of one row, and (domain, length) of its samples. ``next_sample()`` returns
        (tokens, labels, domain) with ``len(tokens) <= row_len``."""
        tokens = np.full(self.row_len, self.pad_id, dtype=np.int64)
        labels = np.full(self.row_len, IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros(self.row_len, dtype=np.int64)
        placed: list[tuple[int, int]] = []
        used = 0
        while True:
            sample = self.pending if self.pending is not None else next_sample()
            self.pending = None
            sample_tokens, sample_labels, domain = sample
            n = len(sample_tokens)
            if used + n > self.row_len:
                self.pending = sample
                return tokens, labels, positions, placed
            tokens[used:used + n] = sample_tokens
            labels[used:used + n] = sample_labels
            positions[used:used + n] = np.arange(n)
            placed.append((domain, n))
            used += n
            if used == self.row_len:
                return tokens, labels, positions, placed

    def state_dict(self) -> dict:
        if self.pending is None:
            return {"pending": None}
        tokens, labels, domain = self.pending
        return {"pending": {"tokens": tokens.tolist(), "labels": labels.tolist(), "domain": domain}}

    def load_state_dict(self, state: dict) -> None:
        pending = state["pending"]
        self.pending = None if pending is None else (
            np.asarray(pending["tokens"], dtype=np.int64), np.asarray(pending["labels"], dtype=np.int64),
            pending["domain"])
