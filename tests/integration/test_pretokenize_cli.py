"""Pre-tokenized token shards: the CLI writes them atomically, the loader memory-maps them and gives exactly the
batches it gives from the text, and a shard refuses a tokenizer it was not written with."""

import subprocess
import sys

import numpy as np


from motif_titan.data.token_shards import TokenShard

from helpers.corpora import DOCS, corpus


def test_cli_writes_a_shard_of_every_document_with_bos_and_eos(tokenizer, tmp_path):
    source = corpus(tmp_path)
    out = tmp_path / "shard"
    proc = subprocess.run([sys.executable, "-m", "motif_titan.data.pretokenize", "--out", str(out), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "40" in proc.stderr  # the progress bar counted the documents
    shard = TokenShard(out, tokenizer)
    assert len(shard) == 40 and shard.tokens.dtype == np.uint16
    for i, doc in enumerate(DOCS):
        assert shard.document(i).tolist() == tokenizer.encode(doc, add_bos=True, add_eos=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "shard"]  # no temporary left


