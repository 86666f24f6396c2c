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

# The composition matrix's reference runs with ParallelMuon + MuonClip (tests/integration/test_composition_matrix.py:
# 4 steps from the seed checkpoint; FSDP 2 is the reference of the dp-2 rows, FSDP 4 of HSDP 2x2, one process of
# PP 2 x TP 2): what each logs per step (loss, clipped grad norm, GDA's lambda extremes, MuonClip's max logit and
# clipped heads). The 0.2.2 suite runs them and asserts these values; under 0.3 the matrix's rows are compared with
# them.
MATRIX_PARALLEL_MUON_CLIP_REFERENCES = {
    "fsdp2": dict(
        losses={1: 8.16124, 2: 7.44725, 3: 6.64477, 4: 6.40126},
        grad_norms={1: 2.6782, 2: 3.0779, 3: 3.5785, 4: 6.318},
        lambdas={1: (-0.04568, 0.5052), 2: (-0.1176, 0.6388), 3: (-0.1639, 0.7302), 4: (-0.1867, 0.6744)},
        clips={1: (0.6043, 40), 2: (0.3653, 18), 3: (0.4425, 27), 4: (0.4675, 35)}),
    "fsdp4": dict(
        losses={1: 8.16193, 2: 7.39463, 3: 6.35488, 4: 6.55171},
        grad_norms={1: 2.2544, 2: 2.8316, 3: 2.5668, 4: 3.1407},
        lambdas={1: (-0.2363, 0.505), 2: (-0.2217, 0.5961), 3: (-0.2088, 0.6412), 4: (-0.233, 0.6463)},
        clips={1: (0.6138, 40), 2: (0.3843, 20), 3: (0.3699, 25), 4: (0.4259, 35)}),
    "single": dict(
        losses={1: 8.0335, 2: 7.47135, 3: 6.9573, 4: 6.75984},
        grad_norms={1: 2.874, 2: 3.7734, 3: 3.5713, 4: 3.7777},
        lambdas={1: (-0.2362, 0.505), 2: (-0.299, 0.5025), 3: (-0.4267, 0.479), 4: (-0.5109, 0.4361)},
        clips={1: (0.5421, 40), 2: (0.3813, 21), 3: (0.3879, 29), 4: (0.4545, 34)}),
}

# the emulated FP8 run of tests/integration/test_float8_training.py (6 steps)
FP8_EMULATED_LOSSES = {1: "8.05383", 2: "7.51347", 3: "7.08183", 4: "7.04357", 5: "6.82761", 6: "6.97894"}
