"""Validate one fixed model on fixed data with N CPU processes (gloo) and write the logged
metrics of rank zero to a JSON file. Run by tests/test_ddp.py as a separate program, because
Lightning's DDP launcher re-runs the script for each rank.

    python ddp_validate.py <devices> <out.json>
"""

import json
import sys
from functools import partial

import lightning as L
import torch

from vae_zoo.blocks.likelihoods import Bernoulli
from vae_zoo.data import SpritesDataModule
from vae_zoo.models import VAE
from vae_zoo.nets import ConvDecoder, ConvEncoder


def main(devices: int, out: str) -> None:
    L.seed_everything(0)
    model = VAE(
        encoder=partial(ConvEncoder, hidden_channels=(8, 16)),
        decoder=partial(ConvDecoder, hidden_channels=(8, 16)),
        likelihood=Bernoulli(),
        latent_dim=6,
        image_channels=1,
        image_size=28,
        optimizer=partial(torch.optim.Adam, lr=1e-3),
    )
    # 70 validation images in batches of 16: 5 batches of uneven size, split unevenly across ranks
    data = SpritesDataModule(num_train=32, num_val=70, num_test=8, image_size=28, batch_size=16, eval_batch_size=16)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        use_distributed_sampler=False,  # our batch sampler shards by rank itself, without padding
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=data, verbose=False)
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        with open(out, "w") as f:
            json.dump({"metrics": metrics, "world_size": trainer.world_size}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
