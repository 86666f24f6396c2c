"""A small GDA attention with two constructed hot heads (one signal head, one noise head) for the MuonClip tests."""

import torch

from motif_titan.model import GroupedDiffAttention, Motif2ModelArgs

ARGS = Motif2ModelArgs(dim=32, n_layers=2, n_heads=10, n_kv_heads=4, n_noise_heads=2, head_dim=8,
                       ffn_hidden_dim=64, vocab_size=64, max_seq_len=64, rope_theta=10_000.0)
HOT_SIGNAL, HOT_NOISE = 1, 9  # q head 1: signal head of group 0 (K1 shared by 4 heads); 9: noise head of group 1


def hot_attention(seed=0):
    torch.manual_seed(seed)
    attn = GroupedDiffAttention(ARGS, layer_id=1)
    with torch.no_grad():
        attn.init_weights(0.02)
        for hot in (HOT_SIGNAL, HOT_NOISE):
            attn.wq.weight[hot * 8:(hot + 1) * 8] *= 60.0
    return attn
