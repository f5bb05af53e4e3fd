"""Per-step logging must not force a device->host sync (it would stall a GPU every step)."""

import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from test_models import make_vae

from vae_zoo.data import SpritesDataModule

SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__")


class SyncCounter(L.Callback):
    """Counts host-sync calls made between the starts of consecutive training batches."""

    def __init__(self):
        self.count = 0
        self.callers: list[str] = []
        self.per_batch: list[tuple[int, int, int]] = []  # (epoch, batch_idx, syncs since last start)
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._last is not None:
            self.per_batch.append((*self._last, self.count - self._mark))
        self._last, self._mark = (trainer.current_epoch, batch_idx), self.count


def test_training_steps_do_not_sync(monkeypatch):
    counter = SyncCounter()
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            # torch's CPU Adam reads its own CPU step counter with .item(): not a device sync
            # (on CUDA that counter lives on the device). Everything else counts.
            if "torch/optim" not in caller:
                counter.count += 1
                counter.callers.append(caller)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    torch.manual_seed(0)
    data = SpritesDataModule(num_train=320, num_val=64, num_test=8, image_size=28, batch_size=16)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        log_every_n_steps=50,
        logger=False,
        callbacks=[counter, RichProgressBar()],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(make_vae(image_size=28), datamodule=data)
    # 20 batches per epoch; step 0 is a logging step (one sync there is allowed), and the
    # batch before an epoch boundary includes epoch-end work (validation, epoch reductions).
    steady = [syncs for epoch, idx, syncs in counter.per_batch if idx not in (0, 19)]
    assert len(steady) == 36
    assert sum(steady) == 0, (counter.per_batch, sorted(set(counter.callers)))
