"""The model layer's building blocks, below the nets and models that use them: p(x|z) and the
Gaussian posterior (:mod:`~vae_zoo.blocks.likelihoods`), the KL schedule
(:mod:`~vae_zoo.blocks.schedules`), the VQ codebook (:mod:`~vae_zoo.blocks.quantizers`), and the
statistics and metric names every model logs (:mod:`~vae_zoo.blocks.stats`). They import torch
and nothing else of vae_zoo but :mod:`vae_zoo.errors`."""
