"""Behavioural tests of the procedural dSprites generator (vae_zoo.data.sprites)."""

from __future__ import annotations

import math

import pytest
import torch

from vae_zoo.data.sprites import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    SHAPES,
    factor_values,
    make_sprites,
    render_sprites,
    sample_factor_classes,
)

SHAPE, SCALE, ORIENTATION, POS_X, POS_Y = range(5)
MAX_SCALE = FACTOR_SIZES[SCALE] - 1
MID_POS = FACTOR_SIZES[POS_X] // 2
# Factor-effect tests on areas use 128 px, where one scale step grows the sprite by > 2 px per
# side; at 64 px it is ~1.3 px, which pixel-centre sampling can round away.
FINE_SIZE = 128


def combos(**fixed_or_ranges: int | range | list[int]) -> torch.Tensor:
    """All combinations of the given factor classes (ints or iterables), shape (N, 5) long.

    Factors that are not given are set to: shape 0, max scale, orientation 0, centre position.
    """
    defaults = {
        "shape": 0,
        "scale": MAX_SCALE,
        "orientation": 0,
        "pos_x": MID_POS,
        "pos_y": MID_POS,
    }
    axes = []
    for name in FACTOR_NAMES:
        value = fixed_or_ranges.get(name, defaults[name])
        axes.append(torch.tensor([value] if isinstance(value, int) else list(value)))
    return torch.cartesian_prod(*axes).reshape(-1, len(FACTOR_NAMES))


def lit(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) uint8 -> (N, S, S) float mask of sprite pixels."""
    return (images[:, 0] > 0).float()


def area(images: torch.Tensor) -> torch.Tensor:
    """Lit pixels per image, (N,) float."""
    return lit(images).sum(dim=(1, 2))


def centroid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(column, row) centroid of the lit pixels per image, each (N,) float, in pixels."""
    mask = lit(images)
    size = mask.shape[-1]
    coords = torch.arange(size, dtype=torch.float32)
    total = mask.sum(dim=(1, 2))
    col = (mask.sum(dim=1) * coords).sum(dim=1) / total
    row = (mask.sum(dim=2) * coords).sum(dim=1) / total
    return col, row


# ---------------------------------------------------------------------------- format, determinism


@pytest.mark.parametrize("image_size", [64, 32])
def test_make_sprites_shapes_dtypes_and_binary_values(image_size: int) -> None:
    images, classes = make_sprites(200, seed=0, image_size=image_size)
    assert images.shape == (200, 1, image_size, image_size)
    assert images.dtype == torch.uint8
    assert classes.shape == (200, len(FACTOR_NAMES))
    assert classes.dtype == torch.long
    assert set(images.unique().tolist()) == {0, 255}
    assert (area(images) > 0).all(), "every image must show a sprite"
    assert torch.equal(images, render_sprites(classes, image_size=image_size))


def test_make_sprites_is_deterministic_given_seed() -> None:
    images_a, classes_a = make_sprites(300, seed=123)
    images_b, classes_b = make_sprites(300, seed=123)
    images_c, classes_c = make_sprites(300, seed=124)
    assert torch.equal(images_a, images_b)
    assert torch.equal(classes_a, classes_b)
    assert not torch.equal(classes_a, classes_c)
    assert not torch.equal(images_a, images_c)


def test_render_is_independent_of_chunk_size() -> None:
    classes = sample_factor_classes(100, torch.Generator().manual_seed(5))
    assert torch.equal(render_sprites(classes, chunk_size=7), render_sprites(classes))


def test_factor_values_match_dsprites_grids() -> None:
    first = torch.zeros(1, 5, dtype=torch.long)
    last = torch.tensor([[size - 1 for size in FACTOR_SIZES]])
    values = factor_values(torch.cat([first, last]))
    assert values.dtype == torch.float32
    expected = torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0], [3.0, 1.0, 2 * math.pi, 1.0, 1.0]])
    assert torch.equal(values, expected)

    every_class = torch.stack([torch.arange(max(FACTOR_SIZES)).clamp(max=size - 1) for size in FACTOR_SIZES], dim=1)
    values = factor_values(every_class)
    assert torch.equal(values[:3, SHAPE], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(values[:6, SCALE], torch.linspace(0.5, 1.0, 6))
    assert torch.equal(values[:40, ORIENTATION], torch.linspace(0.0, 2 * math.pi, 40))
    assert torch.equal(values[:32, POS_X], torch.linspace(0.0, 1.0, 32))
    assert torch.equal(values[:32, POS_Y], torch.linspace(0.0, 1.0, 32))


# ---------------------------------------------------------------------------- factor effects


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_area_strictly_increases_with_scale(shape: int) -> None:
    classes = combos(
        shape=shape,
        orientation=range(FACTOR_SIZES[ORIENTATION]),
        pos_x=[0, MID_POS],
        scale=range(FACTOR_SIZES[SCALE]),
    )
    # combos() varies the factors in FACTOR_NAMES order, so scale is the leading axis here.
    areas = area(render_sprites(classes, image_size=FINE_SIZE)).reshape(FACTOR_SIZES[SCALE], -1)
    assert (areas.diff(dim=0) > 0).all()


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_pos_x_moves_along_columns_and_pos_y_along_rows(shape: int) -> None:
    positions = range(FACTOR_SIZES[POS_X])
    col, row = centroid(render_sprites(combos(shape=shape, orientation=3, pos_x=positions)))
    assert (col.diff() > 0).all()
    assert (row - row[0]).abs().max() < 0.5

    col, row = centroid(render_sprites(combos(shape=shape, orientation=3, pos_y=positions)))
    assert (row.diff() > 0).all()
    assert (col - col[0]).abs().max() < 0.5


def test_orientation_rotates_the_ellipse() -> None:
    # Orientation class 10 is 10/39 of a full turn, close to a quarter turn.
    images = render_sprites(combos(shape=SHAPES.index("ellipse"), orientation=[0, 10]))
    assert not torch.equal(images[0], images[1])

    def extent(mask: torch.Tensor, dim: int) -> int:
        occupied = mask.any(dim=dim).nonzero()
        return int(occupied.max() - occupied.min() + 1)

    mask = images[:, 0] > 0
    # Unrotated: long axis along the width; quarter-turned: long axis along the height.
    assert extent(mask[0], dim=0) > 1.5 * extent(mask[0], dim=1)
    assert extent(mask[1], dim=1) > 1.5 * extent(mask[1], dim=0)


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_area_is_nearly_invariant_to_orientation(shape: int) -> None:
    classes = combos(shape=shape, orientation=range(FACTOR_SIZES[ORIENTATION]))
    areas = area(render_sprites(classes, image_size=FINE_SIZE))
    assert ((areas - areas.mean()).abs() / areas.mean()).max() < 0.05


def test_shapes_differ_at_identical_other_factors() -> None:
    for orientation in (0, 7):
        images = render_sprites(combos(shape=range(len(SHAPES)), orientation=orientation))
        for i in range(len(SHAPES)):
            for j in range(i + 1, len(SHAPES)):
                assert not torch.equal(images[i], images[j]), (SHAPES[i], SHAPES[j])


@pytest.mark.parametrize("image_size", [64, 32])
def test_largest_sprites_at_extreme_positions_never_touch_the_border(image_size: int) -> None:
    extremes = [0, FACTOR_SIZES[POS_X] - 1]
    classes = combos(
        shape=range(len(SHAPES)),
        orientation=range(FACTOR_SIZES[ORIENTATION]),
        pos_x=extremes,
        pos_y=extremes,
    )
    images = render_sprites(classes, image_size=image_size)[:, 0]
    assert (area(images[:, None]) > 0).all()
    for border in (images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]):
        assert (border == 0).all()


# ---------------------------------------------------------------------------- sampling


def test_sample_factor_classes_range_and_coverage() -> None:
    classes = sample_factor_classes(20_000, torch.Generator().manual_seed(0))
    assert classes.shape == (20_000, len(FACTOR_NAMES))
    assert classes.dtype == torch.long
    for k, size in enumerate(FACTOR_SIZES):
        assert classes[:, k].min() >= 0
        assert classes[:, k].max() < size
        assert torch.equal(classes[:, k].unique(), torch.arange(size))
