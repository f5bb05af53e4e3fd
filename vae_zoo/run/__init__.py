"""The run layer: composing a config (:mod:`~vae_zoo.run.config`), running an experiment
(:mod:`~vae_zoo.run.experiment`), loading a trained run (:mod:`~vae_zoo.run.run_config`) or
continuing one in its folder (:mod:`~vae_zoo.run.continued_run`), and what a run folder
promises: its lock and atomic writes (:mod:`~vae_zoo.run.run_folder`), checkpoints
(:mod:`~vae_zoo.run.checkpointing`), trust in what a run's files name (:mod:`~vae_zoo.run.trust`),
loggers and the console. The Optuna study behind ``hparams_search=optuna`` is
:mod:`~vae_zoo.run.search`. The entry points call this layer; it calls the models, data,
callbacks and metrics below it."""
