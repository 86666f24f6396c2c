"""Losses pinned from TorchTitan 0.2.2 runs (torch 2.13.0 CPU, this repo's launcher), asserted by the 0.2.2 suite and
by tests/titan03 under TorchTitan 0.3: the same TOML must log the same digits under either version. A change that
moves them on purpose (the model's init, the data order) updates them here, once, for both."""

# The README's main job: python -m motif_titan.train --job.config_file train_configs/motif2_debug.toml (100 steps,
# log_freq 10); the README quotes these digits.
README_MAIN_JOB_LOSSES = {
    "1": "8.07713", "10": "6.48267", "20": "5.98383", "30": "5.54298", "40": "6.12670", "50": "4.99876",
    "60": "5.04356", "70": "5.60533", "80": "4.65683", "90": "4.66212", "100": "4.15432",
}

# motif2_debug.toml, 3 steps, every step logged (tests/integration/test_debug_config_runs.py)
DEBUG_TOML_FIRST_STEPS = {"1": "8.07713", "2": "8.01272", "3": "7.33945"}

# the curriculum example on 2 ranks with both ramps, 8 steps: the reference run of
# tests/integration/test_curriculum_training.py::test_curriculum_run_on_two_ranks_resumes_exactly_mid_ramp
CURRICULUM_TWO_RANK_LOSSES = {1: "8.07388", 2: "7.62580", 3: "7.55245", 4: "7.45797", 5: "6.97968", 6: "6.81584",
                              7: "6.66981", 8: "6.62988"}

# the composition matrix's FSDP 2 row with ParallelMuon + MuonClip from the seed checkpoint (4 steps)
FSDP2_PARALLEL_MUON_CLIP_LOSSES = {1: 8.16124, 2: 7.44725, 3: 6.64477, 4: 6.40126}

# the emulated FP8 run of tests/integration/test_float8_training.py (6 steps)
FP8_EMULATED_LOSSES = {1: "8.05383", 2: "7.51347", 3: "7.08183", 4: "7.04357", 5: "6.82761", 6: "6.97894"}
