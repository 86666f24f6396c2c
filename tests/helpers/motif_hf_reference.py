"""A plain reader of a Motif-2 HF folder: logits in float64 from ``config.json`` and the safetensors files alone,
written from ../shared/spec/hf_format.md and model.md, importing nothing of motif_titan (so an export is checked
against the format, not against the code that wrote it)."""

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file


def read_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((folder / "config.json").read_text())
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors = {}
    for file in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(str(folder / file)))
    assert set(tensors) == set(index["weight_map"]), "the index lists exactly the stored tensors"
    return config, {name: t.to(torch.float64) for name, t in tensors.items()}


def _rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE over the whole head_dim of x (bs, seq, heads, d)."""
    seq, d = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.outer(torch.arange(seq, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], -1)[None, :, None, :]
    half = d // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * angles.cos() + rotated * angles.sin()


def reference_logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    """(bs, seq, vocab) float64 logits of the folder's model for ``tokens`` (bs, seq)."""
    config, w = read_folder(folder)
    n_q = config["num_attention_heads"]
    n_groups = config.get("num_noise_heads", n_q // 2)
    d = config.get("head_dim", config["hidden_size"] // n_q)
    ratio = (n_q - n_groups) // n_groups
    eps, attn_eps, theta = config["rms_norm_eps"], config["attn_rms_norm_eps"], config["rope_theta"]
    bs, seq = tokens.shape
    causal = torch.full((seq, seq), -math.inf, dtype=torch.float64).triu(1)

    def softmax_map(q, k):  # (bs, seq, d) x (bs, seq, d) -> (bs, seq, seq)
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + causal, dim=-1)

    x = w["model.embed_tokens.weight"][tokens]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = _rope((h @ w[p + "self_attn.q_proj.weight"].T).view(bs, seq, n_q, d), theta)
        k = _rope((h @ w[p + "self_attn.k_proj.weight"].T).view(bs, seq, -1, d), theta)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(bs, seq, -1, d)
        lambda_init = 0.8 - 0.6 * math.exp(-0.3 * (i - 1))
        lam = (torch.exp(torch.dot(w[p + "self_attn.lambda_q1"], w[p + "self_attn.lambda_k1"]))
               - torch.exp(torch.dot(w[p + "self_attn.lambda_q2"], w[p + "self_attn.lambda_k2"])) + lambda_init)
        heads = []
        for g in range(n_groups):
            value = torch.cat([v[:, :, 2 * g], v[:, :, 2 * g + 1]], -1)  # (bs, seq, 2d)
            noise = softmax_map(q[:, :, g * (ratio + 1) + ratio], k[:, :, 2 * g + 1])
            for j in range(ratio):
                signal = softmax_map(q[:, :, g * (ratio + 1) + j], k[:, :, 2 * g])
                out = (signal - lam * noise) @ value
                heads.append(_rms_norm(out, w[p + "self_attn.subln.weight"], attn_eps) * (1 - lambda_init))
        x = x + torch.cat(heads, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        coef, bias = w[p + "mlp.act_fn.weight"], w[p + "mlp.act_fn.bias"]
        poly = (coef[0] * _rms_norm(gate ** 3, None, 1e-6) + coef[1] * _rms_norm(gate ** 2, None, 1e-6)
                + coef[2] * _rms_norm(gate, None, 1e-6) + bias)
        x = x + (poly * up) @ w[p + "mlp.down_proj.weight"].T
    x = _rms_norm(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if not config.get("tie_word_embeddings") else w["model.embed_tokens.weight"]
    return x @ head.T
