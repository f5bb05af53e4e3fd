"""Sharding under real DDP: two CPU processes (gloo) train for three epochs and record which
examples each rank saw."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

NUM_TRAIN, NUM_VAL, EPOCHS, WORLD_SIZE = 103, 37, 3, 2

# Run as its own program: Lightning's "ddp" strategy starts rank 1 by running it again.
SCRIPT = textwrap.dedent(
    f"""
    import json, sys
    import lightning as L
    import torch
    from vae_zoo.data import InMemoryDataModule

    class IndexedData(InMemoryDataModule):
        # each example carries its own index, so the ranks can report what they saw
        def load_splits(self):
            return {{
                name: {{"image": torch.zeros(n, 1, 4, 4, dtype=torch.uint8), "index": torch.arange(n)}}
                for name, n in (("train", {NUM_TRAIN}), ("val", {NUM_VAL}))
            }}

    class Recorder(L.LightningModule):
        def __init__(self, out):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.out, self.seen = out, {{"train": [], "val": []}}

        def training_step(self, batch, batch_idx):
            self.seen["train"] += batch["index"].tolist()
            return (self.weight * batch["image"].mean() - 1.0).square()

        def validation_step(self, batch, batch_idx):
            self.seen["val"] += batch["index"].tolist()

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                self._dump("val")

        def on_train_epoch_end(self):
            self._dump("train")

        def _dump(self, stage):
            path = f"{{self.out}}/{{stage}}_epoch{{self.current_epoch}}_rank{{self.global_rank}}.json"
            with open(path, "w") as f:
                json.dump(self.seen[stage], f)
            self.seen[stage] = []

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator="cpu", devices={WORLD_SIZE}, strategy="ddp", use_distributed_sampler=False,
        max_epochs={EPOCHS}, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Recorder(sys.argv[1]), datamodule=IndexedData(image_size=4, channels=1, batch_size=10, eval_batch_size=8))
    """
)


def test_ddp_ranks_get_disjoint_shards(tmp_path: Path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "seen"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, str(script), str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]

    def seen(stage: str, epoch: int) -> list[list[int]]:
        return [json.loads((out / f"{stage}_epoch{epoch}_rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]

    shards_per_epoch = []
    for epoch in range(EPOCHS):
        train = seen("train", epoch)
        # equal shards (so equal step counts), disjoint, covering all but the remainder
        assert [len(shard) for shard in train] == [NUM_TRAIN // WORLD_SIZE] * WORLD_SIZE
        union = set().union(*map(set, train))
        assert len(union) == sum(len(shard) for shard in train) and union <= set(range(NUM_TRAIN))
        shards_per_epoch.append(train[0])
        # validation: every example exactly once across the ranks
        assert sorted(sum(seen("val", epoch), [])) == list(range(NUM_VAL))
    # a new shuffle each epoch
    assert shards_per_epoch[0] != shards_per_epoch[1] != shards_per_epoch[2]
