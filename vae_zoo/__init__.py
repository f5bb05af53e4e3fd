"""vae_zoo: variational autoencoders on one shared ELBO base (PyTorch Lightning + Hydra)."""

__version__ = "0.1.0"
