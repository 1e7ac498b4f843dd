"""The formula-driven (FractalDB-style) source images."""

import numpy as np
import pytest

from mona_tune.models import fractals
from mona_tune.models.source import load_source_data


@pytest.fixture(scope="module")
def images():
    return fractals.fractal_images()


def test_categories_are_contractive_and_fill_the_image():
    rng = np.random.default_rng(3)
    cats = fractals.categories(rng, 6)
    assert cats.shape == (6, fractals.MAX_MAPS, 6)
    used = (cats != 0).any(-1)
    assert ((used.sum(1) >= 2) & (used.sum(1) <= fractals.MAX_MAPS)).all()
    for params, maps in zip(cats, used):
        for a, b, c, d, *_ in params[maps]:
            assert np.linalg.norm([[a, b], [c, d]], 2) < 1.0
    fill = (fractals.render(cats, rng) > 0).mean(axis=(1, 2))
    # a fresh rendering of a kept category fills about what its test rendering did
    assert (fill >= 0.5 * fractals.MIN_FILL).all()


def test_render_of_the_sierpinski_triangle():
    """Three maps x -> x/2 + t (t = (0,0), (1/2,0), (1/4,1/2)): the triangle (0,0), (1,0), (1/2,1)
    with equal weights, so each half-size corner triangle gets a third of the points, and the
    middle triangle (1/4,1/2), (3/4,1/2), (1/2,0) is empty."""
    params = np.zeros((1, fractals.MAX_MAPS, 6))
    for k, (tx, ty) in enumerate([(0.0, 0.0), (0.5, 0.0), (0.25, 0.5)]):
        params[0, k] = [0.5, 0.0, 0.0, 0.5, tx, ty]
    counts = fractals.render(params, np.random.default_rng(0))[0].astype(float)
    size = fractals.SIZE
    assert counts.sum() == fractals.CHAINS * (fractals.ITERS - fractals.BURN_IN)
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)  # row = y, col = x (bounding box [0,1]²)
    top = counts[rows > 0.5].sum() / counts.sum()
    left = counts[(rows < 0.5) & (cols < 0.5)].sum() / counts.sum()
    assert abs(top - 1 / 3) < 0.05 and abs(left - 1 / 3) < 0.05
    hole = (rows < 0.5 - 0.08) & (np.abs(cols - 0.5) < 0.5 * rows - 0.08)
    assert hole.sum() > 10 and counts[hole].sum() == 0
    flipped = fractals.render(params, np.random.default_rng(0), flip=np.array([True]))[0]
    assert np.array_equal(flipped, counts[:, ::-1])


def test_images_are_reproducible_balanced_and_parts_disjoint(images):
    x, y, part = images
    n_per = sum(fractals.FRACTAL_SPLIT)
    assert x.shape == (fractals.CATEGORIES * n_per, fractals.SIZE, fractals.SIZE)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    for c in range(fractals.CATEGORIES):
        counts = np.bincount(part[y == c], minlength=3)
        assert counts.tolist() == list(fractals.FRACTAL_SPLIT)
    # no image is empty or full, and no two images are the same bytes (so no part shares one)
    fill = (x > 0).mean(axis=(1, 2))
    assert fill.min() > 0.01 and fill.max() < 0.99
    assert len({img.tobytes() for img in x}) == len(x)
    x2, y2, part2 = fractals.fractal_images()
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and np.array_equal(part, part2)


def test_fractal_source_data_parts(images):
    data = load_source_data("fractals", probe_samples=100)
    assert data.num_classes == fractals.CATEGORIES
    assert data.x_pretrain.shape[1:] == (3, fractals.SIZE, fractals.SIZE)
    pre, ali, pro = fractals.FRACTAL_SPLIT
    assert len(data.y_pretrain) == pre * fractals.CATEGORIES
    assert len(data.y_align) == ali * fractals.CATEGORIES
    assert len(data.y_probe) == 100
    # the probe subset is mixed across categories, not the first few categories only
    assert len(np.unique(data.y_probe.numpy())) >= fractals.CATEGORIES // 2
    keys = [{bytes(img[0].numpy()) for img in part}
            for part in (data.x_pretrain, data.x_align, data.x_probe)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
