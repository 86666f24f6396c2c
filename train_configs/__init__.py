"""The TOML configs of train_configs/, installed as ``motif_titan.train_configs``: TorchTitan 0.3's config functions
(``motif_titan.config_registry``) read them from there, so an installed wheel has them too."""
