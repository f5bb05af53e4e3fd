"""Fréchet distance between real and generated images, with torchmetrics.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
Nash Equilibrium") fits a Gaussian to the features of each image set and reports

    d^2 = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)),

the squared Fréchet (2-Wasserstein) distance between the two Gaussians. The computation is
torchmetrics' ``FrechetInceptionDistance`` (its feature sums are float64).

The features decide what the number means. The published FID uses Inception-v3 features
(:func:`inception_v3_features`), whose weights torch-fidelity downloads once; where they are
not on disk and cannot be downloaded, that fails up front with
:class:`FeatureExtractorUnavailableError`. The alternative, and the only choice for data such as
1-channel sprites that Inception was not trained on, is a classifier trained on the dataset
itself, whose penultimate layer gives the features (:class:`ClassifierFeatureExtractor`,
loaded from a checkpoint). Such "FID" values compare models only under the same extractor and
sample counts, so :func:`frechet_distance` returns them with the number.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

from vae_zoo.errors import VaeZooError
from vae_zoo.support.extras import installed

#: The Inception-v3 weights torch-fidelity (and so torchmetrics) uses, converted from the
#: TensorFlow graph of the original FID code; it downloads them into torch hub's cache.
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FEATURE_LAYERS = (64, 192, 768, 2048)


class FeatureExtractorUnavailableError(VaeZooError, RuntimeError):
    """The configured FID feature extractor cannot be built (missing package or weights)."""


@dataclass(frozen=True)
class FIDResult:
    """A Fréchet distance and what it was measured with.

    Attributes:
        value: the squared Fréchet distance between the Gaussian fits of the two feature sets
            (>= 0; "FID" when the extractor is Inception-v3 pool3).
        feature_extractor: name of the extractor (``ClassifierFeatureExtractor.name``, or
            ``inception-v3-compat/2048``).
        num_features: dimension of the features.
        num_real, num_fake: how many images of each set were used (FID is biased upward at small
            counts: compare values only at equal counts).
    """

    value: float
    feature_extractor: str
    num_features: int
    num_real: int
    num_fake: int


# ------------------------------------------------------------------ feature extractors
class ClassifierFeatureExtractor(nn.Module):
    """A small conv classifier whose penultimate layer gives FID features.

    conv(3x3, stride 2) -> SiLU -> conv(3x3, stride 2) -> SiLU -> average pool to 4x4 ->
    linear -> SiLU = features (num_features), then a linear head to ``num_classes`` logits,
    used only to train it. Images of any size work (the pooling is adaptive); the 4x4 grid
    keeps coarse positions, which a global pool would discard.

    ``forward`` takes float images in [0, 1], (N, C, H, W), and returns (N, num_features)
    float32 features, the contract of torchmetrics' custom FID feature (``normalize=True``).
    It stays in eval mode and keeps no gradients: a fixed function of the image.

    Train it on the dataset's labels elsewhere (cross-entropy on :meth:`logits`) and save it
    with :meth:`save_checkpoint`; a run's config then loads it by path::

        feature_extractor:
          _target_: vae_zoo.metrics.fid.ClassifierFeatureExtractor.from_checkpoint
          path: /path/to/classifier.pt

    An untrained extractor with a fixed ``seed`` is a deterministic random-feature map: fine for
    tests, but its distances mean little.

    Args:
        in_channels: image channels.
        num_features: size of the feature vector.
        num_classes: outputs of the classification head.
        hidden_channels: channels of the two conv layers.
        seed: initialises the weights from this seed (the global RNG is left untouched).
        name: how results name this extractor (default: describes it and says untrained).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_features: int = 64,
        num_classes: int = 10,
        hidden_channels: tuple[int, int] = (32, 64),
        seed: int = 0,
        name: str | None = None,
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "num_features": num_features,
            "num_classes": num_classes,
            "hidden_channels": tuple(hidden_channels),
        }
        #: read by torchmetrics to size its state without a dummy forward pass
        self.num_features = num_features
        self.name = name or f"ClassifierFeatureExtractor(untrained, seed={seed}, features={num_features})"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            first, second = hidden_channels
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, first, 3, stride=2, padding=1),
                nn.SiLU(),
                nn.Conv2d(first, second, 3, stride=2, padding=1),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d(4),  # a 4x4 grid: where things are in the image still counts
                nn.Flatten(),
                nn.Linear(second * 16, num_features),
                nn.SiLU(),
            )
            self.head = nn.Linear(num_features, num_classes)
            for layer in self.modules():  # He initialisation: unit-scale features even untrained
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ClassifierFeatureExtractor:
        """Stay in eval mode (a metric's feature map must not change); train the weights by
        calling ``requires_grad_(True)`` and :meth:`logits` in your own loop."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, H, W) float in [0, 1] -> (N, num_features) features."""
        return self.body(images.float())

    def logits(self, images: Tensor) -> Tensor:
        """(N, num_classes) class logits, for training the extractor."""
        return self.head(self(images))

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write the weights and constructor arguments to ``path`` (a torch.save file)."""
        torch.save({"config": self.config, "state_dict": self.state_dict()}, path)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str | None = None) -> ClassifierFeatureExtractor:
        """Load an extractor written by :meth:`save_checkpoint`; ``name`` defaults to the file name."""
        path = Path(path)
        if not path.is_file():
            raise FeatureExtractorUnavailableError(
                f"No FID feature extractor checkpoint at {path}. Train a ClassifierFeatureExtractor "
                "on the dataset and save it with save_checkpoint(path), or point the config there."
            )
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        extractor = cls(**checkpoint["config"], name=name or f"ClassifierFeatureExtractor({path.name})")
        extractor.load_state_dict(checkpoint["state_dict"])
        return extractor


def train_classifier_extractor(
    batches: Callable[[], Iterable[Mapping[str, Tensor]]],
    test_batches: Callable[[], Iterable[Mapping[str, Tensor]]],
    in_channels: int,
    num_classes: int,
    epochs: int = 3,
    lr: float = 2e-3,
    seed: int = 0,
    label_key: str = "label",
    num_features: int = 64,
    hidden_channels: tuple[int, int] = (32, 64),
) -> tuple[ClassifierFeatureExtractor, float]:
    """Train a :class:`ClassifierFeatureExtractor` on a dataset's labels (cross-entropy, Adam),
    for FID on data where Inception's weights are unavailable or do not fit (small grey images).

    Args:
        batches: each call yields one epoch of model-ready training batches (``image`` in
            [0, 1], ``label_key`` class indices).
        test_batches: one pass over held-out batches, for the accuracy that is returned.
        num_features, hidden_channels: the extractor's size (:class:`ClassifierFeatureExtractor`).

    Returns:
        The extractor (eval mode, no gradients) and its accuracy on ``test_batches``, a share.
    """
    extractor = ClassifierFeatureExtractor(
        in_channels=in_channels,
        num_features=num_features,
        num_classes=num_classes,
        hidden_channels=hidden_channels,
        seed=seed,
    )
    extractor.requires_grad_(True)
    optimizer = torch.optim.Adam(extractor.parameters(), lr=lr)
    for _ in range(epochs):
        for batch in batches():
            loss = nn.functional.cross_entropy(extractor.logits(batch["image"]), batch[label_key].long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    extractor.requires_grad_(False)
    correct = total = 0
    with torch.no_grad():
        for batch in test_batches():
            correct += (extractor.logits(batch["image"]).argmax(1) == batch[label_key].long()).sum().item()
            total += len(batch["image"])
    return extractor, correct / max(total, 1)


class _InceptionOnUnitImages(nn.Module):
    """torchmetrics' Inception-v3 (which takes uint8 RGB) behind the [0, 1] float interface:
    scales to uint8 and repeats a single grey channel to three."""

    def __init__(self, inception: nn.Module, feature_layer: int):
        super().__init__()
        self.inception = inception
        self.num_features = feature_layer
        self.name = f"inception-v3-compat/{feature_layer}"

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.inception((images * 255).round().to(torch.uint8))


def _inception_weights_cache() -> Path:
    """Where torch hub (and so torch-fidelity) keeps the downloaded Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]


def inception_v3_features(
    feature_layer: int = 2048, weights_path: str | os.PathLike | None = None, allow_download: bool = True
) -> nn.Module:
    """The standard FID feature extractor: Inception-v3 (torch-fidelity's port) pool features.

    Checks up front that it can be built: torch-fidelity must be installed, and the weights must
    be at ``weights_path``, in torch hub's cache, or (``allow_download``) downloadable. Anything
    else raises :class:`FeatureExtractorUnavailableError` naming what is missing and the
    offline alternative, before any image is processed.

    Args:
        feature_layer: 2048 (pool3, the published FID), or 768, 192, 64.
        weights_path: a local copy of ``weights-inception-2015-12-05-6726825d.pth``.
        allow_download: try the download when the weights are not on disk.

    Returns:
        a module taking (N, 1 or 3, H, W) float images in [0, 1] to (N, feature_layer) features.
    """
    alternative = (
        "Offline, use a classifier trained on the dataset instead: "
        "vae_zoo.metrics.ClassifierFeatureExtractor.from_checkpoint(path)."
    )
    if feature_layer not in INCEPTION_FEATURE_LAYERS:
        raise ValueError(f"feature_layer must be one of {INCEPTION_FEATURE_LAYERS}, got {feature_layer}.")
    if not _TORCH_FIDELITY_AVAILABLE or not installed("fid"):
        raise FeatureExtractorUnavailableError(
            "Inception-v3 FID features need the torch-fidelity package (pip install 'vae_zoo[fid]') "
            f"and its weights ({INCEPTION_WEIGHTS_URL}). {alternative}"
        )
    if weights_path is not None and not Path(weights_path).is_file():
        raise FeatureExtractorUnavailableError(
            f"No Inception-v3 weights at {weights_path} (expected {INCEPTION_WEIGHTS_URL.rsplit('/', 1)[-1]}). "
            f"{alternative}"
        )
    cached = _inception_weights_cache()
    if weights_path is None and not cached.is_file() and not allow_download:
        raise FeatureExtractorUnavailableError(
            f"The Inception-v3 weights are not in torch hub's cache ({cached}) and downloading is off. "
            f"Download {INCEPTION_WEIGHTS_URL} to that path or pass weights_path. {alternative}"
        )
    # torch-fidelity reads the weights with torch.load(weights_only=False); a file that loads
    # with weights_only=True holds tensors and plain values only, so that read then runs nothing
    local = Path(weights_path) if weights_path is not None else cached
    if local.is_file():
        from vae_zoo.support.checkpoint_files import load_checkpoint

        load_checkpoint(local)
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        inception = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(feature_layer)],
            feature_extractor_weights_path=None if weights_path is None else str(weights_path),
        )
    except Exception as error:  # urllib/HTTP/OS errors of the download, or a bad weights file
        raise FeatureExtractorUnavailableError(
            f"Could not load the Inception-v3 weights ({error}). Put {INCEPTION_WEIGHTS_URL} at {cached} "
            f"or pass weights_path. {alternative}"
        ) from error
    return _InceptionOnUnitImages(inception, feature_layer)


# ------------------------------------------------------------------------------ the metric
def _batches_of(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(images, Tensor):
        yield from images.split(batch_size)
    else:
        yield from images


def _unit_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float in [0, 1]; anything else is an error."""
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise ValueError(f"Images must be float in [0, 1] or uint8, got dtype {images.dtype}.")
    low, high = images.aminmax()
    if low < 0 or high > 1:
        raise ValueError(
            f"Images must be in [0, 1], got values in [{low.item():.3g}, {high.item():.3g}] "
            "(decoded means are in [0, 1]; rescale [-1, 1] data first)."
        )
    return images.float()


@torch.no_grad()
def frechet_distance(
    real_images: Tensor | Iterable[Tensor],
    fake_images: Tensor | Iterable[Tensor],
    feature_extractor: nn.Module,
    batch_size: int = 256,
) -> FIDResult:
    """The Fréchet distance between the feature Gaussians of two image sets (FID).

    Args:
        real_images: (N_r, C, H, W) float images in [0, 1] (or uint8), or an iterable of such
            batches (e.g. a generator that decodes prior samples batch by batch).
        fake_images: the same for the generated images.
        feature_extractor: maps (B, C, H, W) float [0, 1] images on its device to (B, F)
            features: :class:`ClassifierFeatureExtractor`, :func:`inception_v3_features`, or any
            module with that contract (a ``num_features`` attribute saves a dummy forward pass;
            a ``name`` attribute names it in the result).
        batch_size: images per forward pass when a tensor is given.

    Returns:
        :class:`FIDResult` with the distance and the extractor and sample counts.
    """
    parameter = next(feature_extractor.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    real_batches = (_unit_float(batch.to(device)) for batch in _batches_of(real_images, batch_size))
    first_real = next(real_batches, None)
    if first_real is None:
        raise ValueError("No real images given.")
    # normalize=True: a custom extractor receives the float images unchanged (no uint8 cast)
    metric = FrechetInceptionDistance(
        feature=feature_extractor, normalize=True, input_img_size=tuple(first_real.shape[1:])
    ).to(device)
    metric.update(first_real, real=True)
    for batch in real_batches:
        metric.update(batch, real=True)
    for batch in _batches_of(fake_images, batch_size):
        metric.update(_unit_float(batch.to(device)), real=False)
    num_real, num_fake = int(metric.real_features_num_samples), int(metric.fake_features_num_samples)
    if num_real < 2 or num_fake < 2:
        raise ValueError(f"FID needs at least two real and two fake images, got {num_real} and {num_fake}.")
    return FIDResult(
        value=float(metric.compute()),
        feature_extractor=getattr(feature_extractor, "name", type(feature_extractor).__name__),
        num_features=int(metric.real_features_sum.numel()),
        num_real=num_real,
        num_fake=num_fake,
    )
