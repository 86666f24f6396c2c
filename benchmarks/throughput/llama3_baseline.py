"""TorchTitan's llama3 with the same data path as motif2 (motif_titan's embedded tokenizer and corpus) and a flavor
of motif2 "1B"'s parameter count, registered as the TrainSpec "llama3_baseline". Loaded by the throughput benchmark
through ``--experimental.custom_import llama3_baseline`` (this folder on PYTHONPATH); TorchTitan's own flavors dict is
left as it is."""

import dataclasses

from torchtitan.models.llama3 import TransformerModelArgs, get_train_spec, llama3_args
from torchtitan.protocols.train_spec import register_train_spec

from motif_titan.data.text_dataloader import build_text_dataloader, build_tokenizer

# 1,216,415,744 parameters; motif2 "1B" has 1,224,816,704 (0.7% more)
LLAMA3_1B_EQUAL = TransformerModelArgs(dim=2048, n_layers=16, n_heads=16, n_kv_heads=8, ffn_dim_multiplier=1.6,
                                       multiple_of=256, vocab_size=32768, rope_theta=500_000, max_seq_len=8192)

register_train_spec("llama3_baseline", dataclasses.replace(
    get_train_spec(), model_args={**llama3_args, "1B": LLAMA3_1B_EQUAL},
    build_tokenizer_fn=build_tokenizer, build_dataloader_fn=build_text_dataloader))
