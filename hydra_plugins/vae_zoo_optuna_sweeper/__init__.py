"""vae_zoo's Optuna sweeper for Hydra (``hparams_search=optuna``); the work is in :mod:`vae_zoo.run.search`."""
