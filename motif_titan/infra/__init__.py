"""Parallelism and run infrastructure for Motif-2 models: the version-free parallel plans (``parallel_plans``: TP
over whole GDA groups, FSDP/HSDP), TorchTitan 0.2.2's parallelize_fn (``parallelize``), the job rules every layout
is checked against first, FP8 settings, checkpoint integrity, the non-finite guard. Pipelining is TorchTitan's own
``pipeline_llm``. Nothing is imported here, so that each TorchTitan version imports only its own modules."""
