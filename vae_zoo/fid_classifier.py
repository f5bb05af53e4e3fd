"""Train the classifier FID uses where Inception cannot: ``python -m vae_zoo.fid_classifier
data=mnist data.root=/data path=mnist_classifier.pt`` (settings: ``conf/fid_classifier.yaml``).

A thin Hydra entry point around :func:`vae_zoo.metrics.fid.train_classifier_extractor`: it
trains on the data's training split, reports the accuracy on its test split, and writes the
extractor that ``evaluate`` loads with
``feature_extractor._target_=vae_zoo.metrics.fid.ClassifierFeatureExtractor.from_checkpoint
+feature_extractor.path=<path>``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_zoo.errors import ConfigError, VaeZooError, report_or_reraise
from vae_zoo.run.config import config_dir


def train_fid_classifier(cfg: DictConfig) -> tuple[Path, float, int]:
    """Returns the written file, the test accuracy (a share) and the number of test images."""
    import torch
    from hydra.utils import instantiate

    from vae_zoo.data.splits import SplitBatches
    from vae_zoo.metrics.fid import train_classifier_extractor

    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    if not datamodule.num_classes:
        raise ConfigError(
            f"data={cfg.data._target_} has no class labels to train a classifier on; pick labelled data (mnist, cifar10, sprites)."
        )
    datamodule.setup("fit")
    datamodule.setup("test")

    def epoch():
        for batch in datamodule.train_dataloader():
            yield datamodule.on_after_batch_transfer(batch, 0)

    test = SplitBatches(datamodule, "test", torch.device("cpu"))
    extractor, accuracy = train_classifier_extractor(
        epoch,
        test,
        datamodule.channels,
        datamodule.num_classes,
        epochs=cfg.epochs,
        lr=cfg.lr,
        seed=cfg.seed,
        label_key=cfg.label_key,
        num_features=cfg.num_features,
        hidden_channels=tuple(cfg.hidden_channels),
    )
    path = Path(cfg.path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    extractor.save_checkpoint(path)
    return path, accuracy, test.num_examples


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="fid_classifier")
def _main(cfg: DictConfig) -> None:
    try:
        path, accuracy, examples = train_fid_classifier(cfg)
    except VaeZooError as error:
        report_or_reraise(error)
    print(
        f"FID classifier: test accuracy {accuracy:.2%} on the {examples} test images of {cfg.data._target_}; wrote {path}."
    )
    print(
        "Use it: python -m vae_zoo.evaluate ckpt_path=<run> "
        f"feature_extractor._target_=vae_zoo.metrics.fid.ClassifierFeatureExtractor.from_checkpoint +feature_extractor.path={path}"
    )


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
