"""Export of a Motif-2 checkpoint as an HF model folder: ``python -m motif_titan.export`` (see ``__main__``) and
the folder writer it shares with the upscaler and a training run's HF save (``hf_folder``)."""
