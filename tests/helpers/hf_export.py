"""Reading an exported HF folder back: through TorchTitan's HF import, and with the plain float64 reader."""

import copy
import json

import torch
import torch.distributed.checkpoint as dcp

from motif_titan.model import Motif2Model, Motif2StateDictAdapter
from motif_titan.model.hf_config import from_hf_config

from helpers.motif_hf_reference import reference_logits

TOKENS = torch.randint(0, 2048, (2, 24), generator=torch.Generator().manual_seed(0))


def import_hf(folder) -> Motif2Model:
    """The exported folder read back the way TorchTitan's ``checkpoint.initial_load_in_hf`` reads it: the model
    built from its config.json, the adapter's HF names, DCP's HF storage reader."""
    args = from_hf_config(json.loads((folder / "config.json").read_text()), "config.json")
    model = Motif2Model(args)
    adapter = Motif2StateDictAdapter(args, str(folder))
    hf_state = adapter.to_hf(model.state_dict())
    dcp.load(hf_state, storage_reader=adapter.get_hf_storage_reader(str(folder)), no_dist=True)
    model.load_state_dict(adapter.from_hf(hf_state))
    return model.eval()


def assert_round_trip(model: Motif2Model, out) -> None:
    with torch.no_grad():
        expected = model(TOKENS)
        assert torch.equal(import_hf(out)(TOKENS), expected), "the fp32 export must load back bit for bit"
        float64 = copy.deepcopy(model).double()(TOKENS)
    reference = reference_logits(out, TOKENS)
    # the model's RoPE table is a float32 buffer (rounded by ~6e-8 relative), the reader's is float64; a wrong
    # tensor, layout or field moves logits by far more than 1e-7
    assert torch.allclose(reference, float64, rtol=0, atol=1e-7), (reference - float64).abs().max()
