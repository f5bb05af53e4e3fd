"""Procedural dSprites: binary 2-D shapes with known generative factors, no download needed.

A re-implementation of the factor grid of dSprites (Matthey et al. 2017,
https://github.com/deepmind/dsprites-dataset): every image shows one white sprite on a black
background, fully determined by five independent factors

=============  =======  ==========================================================
factor         classes  value (:func:`factor_values`)
=============  =======  ==========================================================
shape          3        1, 2, 3 for square, ellipse, heart
scale          6        ``linspace(0.5, 1, 6)``
orientation    40       ``linspace(0, 2*pi, 40)`` radians, counter-clockwise
pos_x          32       ``linspace(0, 1, 32)``; moves the sprite along the width (columns)
pos_y          32       ``linspace(0, 1, 32)``; moves the sprite along the height (rows, downward)
=============  =======  ==========================================================

As in dSprites, orientations 0 and 2*pi are both on the grid (the same pose), and the
ground-truth factors are returned as integer class indices so that disentanglement metrics can
use them directly.

Geometry lives in unit coordinates, so any ``image_size`` gives the same picture at a different
resolution: pixel ``(row i, column j)`` of an ``S x S`` image sits at its centre
``(x, y) = ((j + 0.5) / S, (i + 0.5) / S)`` in ``[0, 1]^2``, and is lit iff that point lies inside
the sprite (no anti-aliasing). A pixel ``(x, y)`` is mapped into the sprite's own frame by
translating by the sprite centre, rotating by ``-orientation`` and dividing by
``_HALF_SIZE * sprite_size * scale``; there the three shapes are simple implicit functions, each contained in
the square ``[-1, 1]^2`` (see :func:`_inside`). The centres are kept far enough from the border
that no sprite is clipped and none touches the outermost pixel rows or columns.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_zoo.data.base import InMemoryDataModule, Split
from vae_zoo.errors import ConfigError

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")

# Half the side of the square at scale 1 and sprite_size 1, in image widths: the largest
# square spans 20 % of the image, as in dSprites.
_HALF_SIZE = 0.1
# Empty gap between the furthest possible sprite point and the image edge, in image widths.
# It exceeds half a pixel (the distance from the edge to the outermost pixel centres) for any
# image_size >= 13, so the border rows and columns always stay black.
_MARGIN = 0.04
#: The largest sprite_size: its sprites still move over a sixth of the image.
MAX_SPRITE_SIZE = 2.0


def _geometry(sprite_size: float) -> tuple[float, float, float, float]:
    """(half size, max radius, centre at pos 0, centre at pos 1) in image widths. Every shape
    lies in [-1, 1]^2 in its own frame, hence within radius sqrt(2) * half size of its centre
    whatever the orientation (the largest scale is 1)."""
    half = _HALF_SIZE * sprite_size
    radius = half * math.sqrt(2.0)
    return half, radius, radius + _MARGIN, 1.0 - radius - _MARGIN


# Ellipse u^2 + (v / _ELLIPSE_MINOR)^2 <= 1: semi-axes 1 along u and _ELLIPSE_MINOR along v.
_ELLIPSE_MINOR = 0.5
# The classic heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 spans x in [-1.139, 1.139] and
# y in [-1, 1.237]; x = k u, y = k v + c with these constants fits it into [-1, 1]^2 (u, v),
# centred vertically.
_HEART_STRETCH = 1.14
_HEART_SHIFT = 0.12


def factor_values(classes: Tensor) -> Tensor:
    """Convert factor class indices to their dSprites values.

    Args:
        classes: ``(N, 5)`` int64 class indices, column ``k`` in ``[0, FACTOR_SIZES[k])``, in
            the order of :data:`FACTOR_NAMES`.

    Returns:
        ``(N, 5)`` float32 values: shape in ``{1, 2, 3}``, scale in ``linspace(0.5, 1, 6)``,
        orientation in ``linspace(0, 2*pi, 40)`` (radians), pos_x and pos_y in
        ``linspace(0, 1, 32)``.
    """
    grids = (
        torch.arange(1, FACTOR_SIZES[0] + 1, dtype=torch.float32),
        torch.linspace(0.5, 1.0, FACTOR_SIZES[1]),
        torch.linspace(0.0, 2.0 * math.pi, FACTOR_SIZES[2]),
        torch.linspace(0.0, 1.0, FACTOR_SIZES[3]),
        torch.linspace(0.0, 1.0, FACTOR_SIZES[4]),
    )
    classes = classes.cpu()
    return torch.stack([grid[classes[:, k]] for k, grid in enumerate(grids)], dim=1)


def sample_factor_classes(n: int, generator: torch.Generator) -> Tensor:
    """Draw ``n`` factor combinations, each factor uniform over its classes and independent.

    Args:
        n: number of combinations.
        generator: CPU random generator; the result is a deterministic function of its state.

    Returns:
        ``(n, 5)`` int64 class indices in the order of :data:`FACTOR_NAMES`.
    """
    return torch.stack([torch.randint(size, (n,), generator=generator) for size in FACTOR_SIZES], dim=1)


def _inside(shape: int, u: Tensor, v: Tensor) -> Tensor:
    """Implicit inside test of one shape in its own frame (bool, same shape as ``u`` and ``v``).

    ``u`` points right and ``v`` up (as displayed) at orientation 0; every shape is contained
    in ``[-1, 1]^2``.
    """
    if SHAPES[shape] == "square":
        return (u.abs() <= 1.0) & (v.abs() <= 1.0)
    if SHAPES[shape] == "ellipse":
        return u.square() + (v / _ELLIPSE_MINOR).square() <= 1.0
    x = _HEART_STRETCH * u
    y = _HEART_STRETCH * v + _HEART_SHIFT
    x2 = x.square()
    return (x2 + y.square() - 1.0).pow(3) <= x2 * y.pow(3)


def _render_chunk(classes: Tensor, image_size: int, sprite_size: float = 1.0) -> Tensor:
    """Render ``(M, 5)`` classes into ``(M, image_size, image_size)`` uint8 images in {0, 255}.

    The inside test is evaluated only in a ``window x window`` block of pixels per image that
    covers the disc of the largest radius around the sprite centre; every pixel outside it
    is background. At 64 x 64 the window holds about a tenth of the image's pixels.
    """
    half_size, max_radius, centre_min, centre_max = _geometry(sprite_size)
    _, scale, angle, pos_x, pos_y = factor_values(classes).unbind(dim=1)
    centre_x = centre_min + (centre_max - centre_min) * pos_x
    centre_y = centre_min + (centre_max - centre_min) * pos_y

    # Pixel j (a row or column) has its centre at (j + 0.5) / S; it can lie within the radius
    # of centre c only if first <= (c - r) S - 0.5 <= j <= (c + r) S - 0.5 < first + window.
    # Clamping keeps the window inside the image; it still covers the disc, which does too.
    window = min(math.ceil(2.0 * max_radius * image_size) + 2, image_size)
    offsets = torch.arange(window)

    def window_pixels(centre: Tensor) -> Tensor:
        first = torch.floor((centre - max_radius) * image_size - 0.5).long()
        return first.clamp(0, image_size - window)[:, None] + offsets  # (M, window)

    cols, rows = window_pixels(centre_x), window_pixels(centre_y)
    # Offsets from the sprite centre; x along columns, "up" = -y as row indices grow downward.
    dx = (cols + 0.5) / image_size - centre_x[:, None]
    dup = centre_y[:, None] - (rows + 0.5) / image_size

    # Sprite frame (u, v) = R(-angle) (dx, dup) / (half size * scale). Both are sums of a
    # per-column and a per-row term, so only the final broadcast adds are (M, window, window).
    inv = 1.0 / (half_size * scale)
    cos = (torch.cos(angle) * inv)[:, None]
    sin = (torch.sin(angle) * inv)[:, None]
    u_col, u_row = cos * dx, sin * dup
    v_col, v_row = -sin * dx, cos * dup

    inside = torch.empty((classes.shape[0], window, window), dtype=torch.bool)
    for k in range(len(SHAPES)):
        idx = (classes[:, 0] == k).nonzero().squeeze(1)
        u = u_col[idx, None, :] + u_row[idx, :, None]
        v = v_col[idx, None, :] + v_row[idx, :, None]
        inside[idx] = _inside(k, u, v)

    images = torch.zeros((classes.shape[0], image_size, image_size), dtype=torch.uint8)
    image_index = torch.arange(classes.shape[0])[:, None, None]
    images[image_index, rows[:, :, None], cols[:, None, :]] = inside.to(torch.uint8) * 255
    return images


def render_sprites(classes: Tensor, image_size: int = 64, chunk_size: int = 4096, sprite_size: float = 1.0) -> Tensor:
    """Render sprites for given factor classes, vectorised over images on the CPU.

    Images are independent of one another and of ``chunk_size``: the same classes always give
    identical bytes.

    Args:
        classes: ``(N, 5)`` int64 class indices in the order of :data:`FACTOR_NAMES`.
        image_size: side ``S`` of the square images in pixels.
        chunk_size: images rendered per vectorised step; peak memory grows linearly with
            ``chunk_size * S^2``.
        sprite_size: every sprite's size relative to dSprites' (1: the largest square spans
            20 % of the image; 2: 40 %, moving over a smaller part of it), at most
            :data:`MAX_SPRITE_SIZE`.

    Returns:
        ``(N, 1, S, S)`` uint8 images with values exactly 0 (background) and 255 (sprite).
        Columns follow pos_x, rows (top to bottom) follow pos_y.
    """
    if classes.ndim != 2 or classes.shape[1] != len(FACTOR_NAMES):
        raise ValueError(f"classes must have shape (N, {len(FACTOR_NAMES)}), got {tuple(classes.shape)}")
    if not 0.0 < sprite_size <= MAX_SPRITE_SIZE:
        raise ConfigError(
            f"data.sprite_size must be in (0, {MAX_SPRITE_SIZE}] (1 = dSprites' sizes), got {sprite_size}."
        )
    classes = classes.cpu().long()
    images = torch.empty((classes.shape[0], 1, image_size, image_size), dtype=torch.uint8)
    for start in range(0, classes.shape[0], chunk_size):
        chunk = classes[start : start + chunk_size]
        images[start : start + chunk.shape[0], 0] = _render_chunk(chunk, image_size, sprite_size)
    return images


def make_sprites(n: int, seed: int, image_size: int = 64, sprite_size: float = 1.0) -> tuple[Tensor, Tensor]:
    """Sample ``n`` random factor combinations and render them.

    Args:
        n: number of images.
        seed: seed of the ``torch.Generator`` used by :func:`sample_factor_classes`.
        image_size: side ``S`` of the square images in pixels.
        sprite_size: see :func:`render_sprites`.

    Returns:
        ``(images, classes)``: ``(n, 1, S, S)`` uint8 images in ``{0, 255}`` and their
        ``(n, 5)`` int64 factor classes. Deterministic given ``seed``.
    """
    classes = sample_factor_classes(n, torch.Generator().manual_seed(seed))
    return render_sprites(classes, image_size=image_size, sprite_size=sprite_size), classes


class SpritesDataModule(InMemoryDataModule):
    """Procedural dSprites-style data, rendered in memory: the default data of vae_zoo.

    ``num_train + num_val + num_test`` factor combinations are drawn from ``seed`` (uniform
    and independent, as in dSprites) and rendered once. Batches carry ``factors`` (B, 5) class
    indices in the order of :data:`FACTOR_NAMES` (for disentanglement metrics) and ``label`` =
    the shape class (for conditional models).

    Args:
        num_train, num_val, num_test: split sizes.
        image_size: side of the square images (64 as in dSprites; any size >= 13 renders).
        sprite_size: the sprites' size relative to dSprites' (:func:`render_sprites`).
        channels: must be 1 (binary images).
        **kwargs: see :class:`InMemoryDataModule`.
    """

    def __init__(
        self,
        num_train: int = 16000,
        num_val: int = 2000,
        num_test: int = 2000,
        image_size: int = 64,
        sprite_size: float = 1.0,
        channels: int = 1,
        num_classes: int = len(SHAPES),
        **kwargs,
    ):
        if channels != 1:
            raise ConfigError(
                f"Sprites are binary one-channel images; got data.channels={channels}. Set data.channels=1."
            )
        super().__init__(image_size=image_size, channels=channels, num_classes=num_classes, **kwargs)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.sprite_size = sprite_size

    def load_splits(self) -> dict[str, Split]:
        images, classes = make_sprites(sum(self.sizes.values()), self.seed, self.image_size, self.sprite_size)
        splits, start = {}, 0
        for name, size in self.sizes.items():
            factors = classes[start : start + size]
            splits[name] = {
                "image": images[start : start + size],
                "factors": factors,
                "label": factors[:, FACTOR_NAMES.index("shape")].clone(),
            }
            start += size
        return splits
