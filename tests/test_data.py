"""Tests of oodlib.data: embedded datasets, conversions, start images, natural crops, real-data errors."""

from __future__ import annotations

import pathlib
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from oodlib import data

SHAPES = {"mnist5k": (1, 28, 28), "digits": (1, 8, 8), "lfw": (1, 25, 25)}
SIZES = {"mnist5k": (4000, 1000), "lfw": (150, 50)}


def _check_images(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape) == shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


# ----------------------------------------------------------------------------------------------- embedded sets


@pytest.mark.parametrize("name", data.EMBEDDED_DATASETS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_embedded_shapes_dtypes_range(name: str, split: str) -> None:
    images = data.load_dataset(name, split)
    _check_images(images.x, (len(images), *SHAPES[name]))
    assert images.y.dtype == torch.int64 and images.y.shape == (len(images),)
    assert set(images.y.tolist()) == set(range(len(images.classes)))
    assert images.x.max() > 0.5  # scaled to [0, 1], not left at 0..1/255
    if name in SIZES:
        assert len(images) == SIZES[name][split == "test"]


def test_embedded_class_balance_and_lfw_labels() -> None:
    train, test = data.load_dataset("mnist5k", "train"), data.load_dataset("mnist5k", "test")
    assert torch.bincount(train.y).tolist() == [400] * 10 and torch.bincount(test.y).tolist() == [100] * 10
    lfw = data.load_dataset("lfw", "all")
    assert lfw.classes == ("face", "non-face") and lfw.y.tolist() == [0] * 100 + [1] * 100
    digits_test = data.load_dataset("digits", "test")
    assert 0.18 < len(digits_test) / 1797 < 0.22


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


@pytest.mark.parametrize("name", data.EMBEDDED_DATASETS)
def test_split_deterministic_disjoint_and_seed_independent(name: str) -> None:
    train, test = data.load_dataset(name, "train"), data.load_dataset(name, "test")
    full = data.load_dataset(name, "all")
    assert torch.equal(train.x, data.load_dataset(name, "train", seed=123).x)  # seed only drives `limit`
    assert torch.equal(test.y, data.load_dataset(name, "test").y)
    assert not _rows(train.x) & _rows(test.x)  # (the embedded sets hold no duplicate images)
    assert _rows(train.x) | _rows(test.x) == _rows(full.x) and len(train) + len(test) == len(full)


def test_stratified_split_indices() -> None:
    y = np.repeat(np.arange(3), [10, 20, 30])
    train, test = data.stratified_split(y, 0.2)
    assert not set(train) & set(test) and sorted([*train, *test]) == list(range(60))
    assert np.bincount(y[test]).tolist() == [2, 4, 6]
    assert np.array_equal(test, data.stratified_split(y, 0.2)[1])


def test_limit_is_deterministic_subset() -> None:
    a = data.load_dataset("mnist5k", "train", limit=50, seed=3)
    b = data.load_dataset("mnist5k", "train", limit=50, seed=3)
    c = data.load_dataset("mnist5k", "train", limit=50, seed=4)
    assert len(a) == 50 and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert torch.equal(a.x, data.load_dataset("mnist5k", "train").subset(50, seed=3).x)
    assert len(data.load_dataset("lfw", "test", limit=10_000)) == 50


def test_load_dataset_resizes_and_converts() -> None:
    images = data.load_dataset("digits", "test", image_size=16, channels=3, limit=7)
    _check_images(images.x, (7, 3, 16, 16))
    assert torch.allclose(images.x[:, 0], images.x[:, 1])


def test_cache_cannot_be_mutated() -> None:
    first = data.load_dataset("digits", "all")
    first.x.fill_(0.5)
    first.y.fill_(0)
    again = data.load_dataset("digits", "all")
    assert again.x.max() == 1.0 and again.y.max() == 9


def test_image_set_subset_and_restrict_classes() -> None:
    images = data.load_dataset("mnist5k", "test")
    sub = images.subset(30, seed=1)
    assert len(sub) == 30 and torch.equal(sub.x, images.subset(30, seed=1).x)
    assert len(images.subset(10_000)) == len(images)
    kept = images.restrict_classes([7, 2])
    assert kept.classes == ("7", "2") and len(kept) == 200
    assert torch.equal(kept.x[kept.y == 0], images.x[images.y == 7])
    assert torch.equal(kept.x[kept.y == 1], images.x[images.y == 2])
    with pytest.raises(ValueError):
        images.restrict_classes([0, 0])
    with pytest.raises(ValueError):
        images.restrict_classes([10])


# ----------------------------------------------------------------------------------------------- conversions


def test_to_model_input_channels_and_size() -> None:
    grey = torch.rand(2, 1, 10, 10)
    rgb = data.to_model_input(grey, size=None, channels=3)
    assert rgb.shape == (2, 3, 10, 10) and torch.equal(rgb[:, 2], grey[:, 0])
    colour = torch.zeros(1, 3, 4, 4)
    colour[:, 0], colour[:, 1], colour[:, 2] = 1.0, 0.5, 0.25
    luma = data.to_model_input(colour, size=None, channels=1)
    assert luma.shape == (1, 1, 4, 4) and torch.allclose(luma, torch.full_like(luma, 0.299 + 0.2935 + 0.0285))
    assert data.to_model_input(grey, size=(5, 7), channels=None).shape == (2, 1, 5, 7)
    big = data.to_model_input(torch.rand(3, 20, 20), size=40, channels=1)
    _check_images(big, (1, 40, 40))
    assert torch.equal(data.to_model_input(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8), size=None,
                                           channels=None), torch.ones(1, 1, 2, 2))
    overshoot = data.to_model_input(torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]), size=9, channels=None)
    assert overshoot.min() >= 0 and overshoot.max() <= 1
    with pytest.raises(ValueError):
        data.to_model_input(torch.rand(1, 3, 4, 4), size=None, channels=2)


# ----------------------------------------------------------------------------------------------- start images


@pytest.mark.parametrize("name", data.START_IMAGES)
@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3)])
def test_start_images(name: str, size: int, channels: int) -> None:
    options = {"id_mean": 0.13} if name == "noise_mean_matched" else {}
    image = data.start_image(name, size=size, channels=channels, **options)
    _check_images(image, (1, channels, size, size))
    assert image.std() > 0.02  # not blank
    assert torch.equal(image, data.start_image(name, size=size, channels=channels, **options))


def test_start_image_details() -> None:
    board = data.start_image("checker2", size=8, channels=1)[0, 0]
    assert board[:4, :4].eq(0).all() and board[:4, 4:].eq(1).all() and board[4:, :4].eq(1).all()
    assert data.start_image("checker8", size=16, channels=1)[0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0] * 4
    spiral = data.start_image("spiral", size=48, channels=3)
    assert spiral.max() == 1.0 and spiral.min() == 0.0 and (spiral[0, 0] - spiral[0, 2]).abs().max() > 0.3
    assert data.start_image("fundus", size=(20, 30), channels=3).shape == (1, 3, 20, 30)
    assert not torch.equal(data.start_image("noise", size=8, channels=1, seed=0),
                           data.start_image("noise", size=8, channels=1, seed=1))


def test_start_batch() -> None:
    noise = data.start_batch("noise", 4, size=8, channels=3, seed=5)
    _check_images(noise, (4, 3, 8, 8))
    assert not torch.equal(noise[0], noise[1])
    assert torch.equal(noise, data.start_batch("noise", 4, size=8, channels=3, seed=5))
    assert torch.equal(noise[:1], data.start_image("noise", size=8, channels=3, seed=5))
    assert not torch.equal(noise, data.start_batch("noise", 4, size=8, channels=3, seed=6))
    ct = data.start_batch("ct", 3, size=16, channels=1)
    assert ct.shape == (3, 1, 16, 16) and torch.equal(ct[0], ct[2])


# ----------------------------------------------------------------------------------------------- natural crops


@pytest.mark.parametrize("make", [data.auxiliary_outliers, data.natural_ood_set])
def test_natural_crops_deterministic(make) -> None:
    a = make(6, size=16, channels=3, seed=0)
    _check_images(a, (6, 3, 16, 16))
    assert torch.equal(a, make(6, size=16, channels=3, seed=0))
    assert not torch.equal(a, make(6, size=16, channels=3, seed=1))
    _check_images(make(2, size=12, channels=1, seed=0), (2, 1, 12, 12))


def test_natural_sources_are_disjoint() -> None:
    aux, nat, start = set(data.AUXILIARY_SOURCES), set(data.NATURAL_OOD_SOURCES), set(data.START_IMAGES)
    assert not aux & nat and not nat & (start | {"retina"}) and not aux & start
    assert not torch.equal(data.auxiliary_outliers(4, size=16, channels=3, seed=0),
                           data.natural_ood_set(4, size=16, channels=3, seed=0))


# ----------------------------------------------------------------------------------------------- errors and names


def test_unknown_names_raise_with_valid_choices() -> None:
    with pytest.raises(ValueError, match="mnist5k.*cifar10"):
        data.load_dataset("cifar11")
    with pytest.raises(ValueError, match="train"):
        data.load_dataset("mnist5k", "validation")
    with pytest.raises(ValueError, match="spiral"):
        data.start_image("xray", size=8, channels=1)
    with pytest.raises(ValueError, match="spiral"):
        data.start_batch("xray", 2, size=8, channels=1)
    with pytest.raises(ValueError, match="resnet18"):
        data.pretrained_weights_path("vgg16")


def test_missing_real_dataset(tmp_path: pathlib.Path) -> None:
    with pytest.raises(data.MissingDatasetError) as info:
        data.load_dataset("cifar10", root=tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert "data_scripts/fetch.py cifar10" in message and "cifar10" in message and str(tmp_path) in message
    assert "internet" in message
    (tmp_path / "junk.txt").write_text("not cifar")
    with pytest.raises(data.MissingDatasetError, match="data_scripts/fetch.py cifar10"):
        data.load_dataset("cifar10", "test", root=tmp_path)
    with pytest.raises(ValueError, match="train"):
        data.load_dataset("cifar10", "val", root=tmp_path)


def test_data_dir_env_and_missing_weights(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.data_dir() == pathlib.Path(data.__file__).resolve().parent.parent / "data"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.data_dir() == tmp_path and data.dataset_dir("svhn") == tmp_path / "svhn"
    with pytest.raises(data.MissingDatasetError) as info:
        data.load_dataset("svhn")
    assert "python data_scripts/fetch.py svhn" in str(info.value)
    assert data.fingerprint("svhn") == "missing"
    with pytest.raises(data.MissingDatasetError, match="data_scripts/fetch_weights.py"):
        data.pretrained_weights_path("resnet18")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "resnet18.pth").write_bytes(b"fake")
    (weights / "resnet18.pth.sha256").write_text(data.sha256_file(weights / "resnet18.pth") + "  resnet18.pth\n")
    assert data.pretrained_weights_path("resnet18") == weights / "resnet18.pth"
    (weights / "resnet18.pth").write_bytes(b"changed")
    with pytest.raises(data.MissingDatasetError, match="sha256"):
        data.pretrained_weights_path("resnet18")


# ----------------------------------------------------------------------------------------------- real-data path


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    type_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_real_array_dataset_from_fake_mnist(tmp_path: pathlib.Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    train = data.load_dataset("mnist", root=tmp_path)
    _check_images(train.x, (12, 1, 28, 28))
    assert train.y.tolist() == [i % 10 for i in range(12)] and len(train.classes) == 10
    test = data.load_dataset("mnist", "test", root=tmp_path, limit=3, seed=1, image_size=14, channels=3)
    _check_images(test.x, (3, 3, 14, 14))
    before = data.fingerprint("mnist", root=tmp_path)
    assert before == data.fingerprint("mnist", root=tmp_path) != "missing"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"truncated")
    assert data.fingerprint("mnist", root=tmp_path) != before
    with pytest.raises(data.MissingDatasetError, match="incomplete or corrupted"):
        data.load_dataset("mnist", "test", root=tmp_path)


def test_real_image_folder_dataset_from_fake_oct(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("CNV", "NORMAL"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (30 + 10 * i, 40), dtype=np.uint8)  # sizes vary
                Image.fromarray(pixels).save(folder / f"{i}.png")
    before = data.fingerprint("oct", root=tmp_path)
    train = data.load_dataset("oct", root=tmp_path)
    _check_images(train.x, (6, 1, 224, 224))
    assert train.classes == ("CNV", "NORMAL") and train.y.tolist() == [0, 0, 0, 1, 1, 1]
    small = data.load_dataset("oct", "test", root=tmp_path, image_size=16, channels=3, limit=3, seed=2)
    _check_images(small.x, (3, 3, 16, 16))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "test" / "CNV" / "new.png")
    assert data.fingerprint("oct", root=tmp_path) != before


def test_fingerprints_of_embedded_sets() -> None:
    prints = {name: data.fingerprint(name) for name in data.EMBEDDED_DATASETS}
    assert len(set(prints.values())) == 3 and all(len(p) == 16 for p in prints.values())
    assert data.fingerprint("lfw") == prints["lfw"]
    with pytest.raises(ValueError):
        data.fingerprint("nope")


@pytest.mark.parametrize("id_mean", [0.13, [0.2, 0.5, 0.8]])
def test_mean_matched_noise_has_the_in_distribution_mean(id_mean) -> None:
    channels = 1 if isinstance(id_mean, float) else 3
    x = data.start_batch("noise_mean_matched", 64, size=28, channels=channels, seed=3, id_mean=id_mean)
    _check_images(x, (64, channels, 28, 28))
    means = torch.as_tensor(id_mean, dtype=torch.float32).reshape(-1)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), means, atol=0.005)  # 50k pixels a channel: s.e. < 0.002
    # the same random pattern as the uniform-noise start of that seed, rescaled per channel
    u = data.start_batch("noise", 64, size=28, channels=channels, seed=3)
    low = torch.where(means <= 0.5, 0.0, 2 * means - 1).view(1, -1, 1, 1)
    width = torch.where(means <= 0.5, 2 * means, 2 * (1 - means)).view(1, -1, 1, 1)
    assert torch.equal(x, low + width * u)
    assert float(x.amax()) == pytest.approx(float((low + width).amax()), abs=0.01)  # spans its whole range
    assert torch.equal(x[:1], data.start_image("noise_mean_matched", size=28, channels=channels, seed=3,
                                               id_mean=id_mean))
    assert not torch.equal(x, data.start_batch("noise_mean_matched", 64, size=28, channels=channels, seed=4,
                                               id_mean=id_mean))


def test_mean_matched_noise_needs_a_valid_mean_and_only_it_takes_one() -> None:
    with pytest.raises(ValueError, match="id_mean"):
        data.start_batch("noise_mean_matched", 2, size=8, channels=1)
    with pytest.raises(ValueError, match="id_mean"):
        data.start_batch("noise", 2, size=8, channels=1, id_mean=0.3)
    for bad in (0.0, 1.0, [0.2, 0.3]):
        with pytest.raises(ValueError, match="id_mean"):
            data.start_batch("noise_mean_matched", 2, size=8, channels=1, id_mean=bad)
