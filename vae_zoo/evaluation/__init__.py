"""The evaluation layer above the metrics (:mod:`vae_zoo.metrics`): evaluating and sampling a
trained run (:mod:`~vae_zoo.evaluation.runner`), comparing many runs
(:mod:`~vae_zoo.evaluation.compare`) and the W&B workspace that shows them
(:mod:`~vae_zoo.evaluation.dashboard`). Kept free of imports here, so that ``python -m
vae_zoo.compare --help`` does not import torch."""
