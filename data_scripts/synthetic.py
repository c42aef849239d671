"""Write tiny synthetic stand-ins of the real datasets and random-weight checkpoints, in exactly the on-disk formats
that ``data_scripts/fetch.py`` and ``data_scripts/fetch_weights.py`` produce. Never downloads anything.

For the paper-profile dry run (``tests/test_paper_dryrun.py``): every chapter executes with ``--profile paper``
against these files, so the loaders, the file formats and the chapters' code paths at the paper's architectures and
image sizes are exercised without a GPU or the real data. The images are random (each class has its own mean
colour, so a classifier can learn something) and the weights are random: numbers computed on them mean nothing.

    python data_scripts/synthetic.py --root /tmp/standins             # every real dataset + both weights files
    python data_scripts/synthetic.py --root /tmp/standins cifar10 svhn weights
    OODLIB_DATA=/tmp/standins OODLIB_STANDINS=1 python -m oodlib run notebooks/appendix_c_odin.py --profile paper ...

Each dataset folder gets a ``STANDIN.md5`` manifest (``md5  relative/path`` per file, as ``md5sum`` writes). The
torchvision classes check the MD5 sums of the official files (CIFAR, SVHN, CelebA); ``oodlib.data`` checks a
stand-in against its manifest instead only when ``$OODLIB_STANDINS`` is ``1`` (see ``oodlib.data.STANDIN_ENV``).
Weights get the same ``<arch>.pth.sha256`` file as a real fetch, verified the same way.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import pathlib
import pickle
import sys
from typing import Callable

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from oodlib import data  # noqa: E402  (names and folders live in one place: oodlib.data)

import fetch  # noqa: E402  (ImageNet subset and OCT class names)
import fetch_weights  # noqa: E402  (the weights file format)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split())
CELEBA_ATTRIBUTES = tuple(
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young".split())
GTSRB_CLASSES = 43
MANIFEST = "STANDIN.md5"


# --------------------------------------------------------------------------------------------------- images


def class_images(labels: np.ndarray, shape: tuple[int, ...], n_classes: int, seed: int) -> np.ndarray:
    """uint8 images (N, *shape) with shape (H, W) or (H, W, C): a per-class mean colour plus uniform noise."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(12345 + n_classes).uniform(40, 215, size=(n_classes, *([1] * len(shape[:2])),
                                                                            *shape[2:]))
    noise = rng.uniform(-40, 40, size=(len(labels), *shape))
    return np.clip(means[labels] + noise, 0, 255).astype(np.uint8)


def _labels(n_classes: int, per_class: int) -> np.ndarray:
    """Every class ``per_class`` times, interleaved (0, 1, ..., C-1, 0, 1, ...)."""
    return np.tile(np.arange(n_classes), per_class)


def _save_image(array: np.ndarray, path: pathlib.Path, fmt: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


# --------------------------------------------------------------------------------------------------- writers


def write_cifar(folder: pathlib.Path, per_class: int, hundred: bool) -> None:
    """torchvision's python pickles: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` or
    ``cifar-100-python/{train, test, meta}``; ``data`` (N, 3072) uint8 in CHW order, as the originals.

    CIFAR-10 has ``per_class`` images per class in each of its five training batches and in the test batch.
    CIFAR-100 has ``3 * per_class + 1`` per class for training (700 for the default 2: more than a ResNet-18's 512
    features plus 100 class means, so the Mahalanobis detector's tied covariance is not singular) and
    ``per_class`` for testing."""
    classes = CIFAR100_CLASSES if hundred else CIFAR10_CLASSES
    base = folder / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    base.mkdir(parents=True, exist_ok=True)

    def batch(labels: np.ndarray, seed: int, label: str) -> dict:
        x = class_images(labels, (32, 32, 3), len(classes), seed).transpose(0, 3, 1, 2).reshape(len(labels), -1)
        entry = {"batch_label": label, "data": x, "filenames": [f"synthetic_{seed}_{i}.png" for i in range(len(x))]}
        if hundred:
            entry.update(fine_labels=labels.tolist(), coarse_labels=(labels // 5).tolist())
        else:
            entry["labels"] = labels.tolist()
        return entry

    labels = _labels(len(classes), per_class)
    if hundred:
        files = {"train": batch(_labels(100, 3 * per_class + 1), 1, "training batch 1 of 1"),
                 "test": batch(labels, 2, "testing batch 1 of 1"),
                 "meta": {"fine_label_names": list(classes),
                          "coarse_label_names": [f"superclass_{k}" for k in range(20)]}}
    else:
        files = {f"data_batch_{k}": batch(labels, k, f"training batch {k} of 5") for k in range(1, 6)}
        files["test_batch"] = batch(labels, 6, "testing batch 1 of 1")
        files["batches.meta"] = {"num_cases_per_batch": len(labels), "label_names": list(classes), "num_vis": 3072}
    for name, content in files.items():
        (base / name).write_bytes(pickle.dumps(content, protocol=2))


def write_svhn(folder: pathlib.Path, per_class: int) -> None:
    """``{train,test}_32x32.mat``: ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) in 1..10 (10 is the digit 0)."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for seed, split in enumerate(("train", "test")):
        digits = _labels(10, per_class)
        x = class_images(digits, (32, 32, 3), 10, seed).transpose(1, 2, 3, 0)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})


def _idx(array: np.ndarray) -> bytes:
    """The IDX format of LeCun's MNIST files: magic (0, 0, 0x08 = ubyte, ndim), big-endian int32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(folder: pathlib.Path, per_class: int, class_folder: str) -> None:
    """``<MNIST|FashionMNIST>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (and the ``.gz`` files)."""
    raw = folder / class_folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for seed, prefix in enumerate(("train", "t10k")):
        labels = _labels(10, per_class)
        for name, array in ((f"{prefix}-images-idx3-ubyte", class_images(labels, (28, 28), 10, seed)),
                            (f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))):
            content = _idx(array)
            (raw / name).write_bytes(content)
            (raw / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))


def _size(rng: np.random.Generator, low: int, high: int) -> tuple[int, int]:
    return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def write_gtsrb(folder: pathlib.Path, per_class: int) -> None:
    """``gtsrb/GTSRB/Training/<class:05d>/*.ppm`` (+ ``GT-<class>.csv``), ``gtsrb/GTSRB/Final_Test/Images/*.ppm``
    and ``gtsrb/GT-final_test.csv`` (``;``-separated, with ``Filename`` and ``ClassId``); sizes 25-60 px."""
    base = folder / "gtsrb"
    rng = np.random.default_rng(0)
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    labels = _labels(GTSRB_CLASSES, per_class)
    by_class: dict[int, list[str]] = {}
    for i, label in enumerate(labels):
        h, w = _size(rng, 25, 60)
        name = f"00000_{i // GTSRB_CLASSES:05d}.ppm"
        image = class_images(np.array([label]), (h, w, 3), GTSRB_CLASSES, i)[0]
        _save_image(image, base / "GTSRB" / "Training" / f"{label:05d}" / name, "PPM")
        by_class.setdefault(int(label), []).append(f"{name};{w};{h};5;5;{w - 5};{h - 5};{label}")
    for label, rows in by_class.items():
        (base / "GTSRB" / "Training" / f"{label:05d}" / f"GT-{label:05d}.csv").write_text(
            "\n".join([header, *rows]) + "\n")
    rows = []
    for i, label in enumerate(rng.permutation(labels)):
        h, w = _size(rng, 25, 60)
        image = class_images(np.array([label]), (h, w, 3), GTSRB_CLASSES, 10_000 + i)[0]
        _save_image(image, base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", "PPM")
        rows.append(f"{i:05d}.ppm;{w};{h};5;5;{w - 5};{h - 5};{label}")
    (base / "GT-final_test.csv").write_text("\n".join([header, *rows]) + "\n")


def write_celeba(folder: pathlib.Path, per_split: int) -> None:
    """``celeba/img_align_celeba/<6 digits>.jpg`` (178 x 218, as the aligned originals) and the five annotation
    files torchvision's ``CelebA`` reads (space-separated; partition 0/1/2 = train/valid/test)."""
    base = folder / "celeba"
    n = 3 * per_split
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    partition = np.repeat([0, 1, 2], per_split)
    images = class_images(np.zeros(n, dtype=np.int64), (218, 178, 3), 1, 0)
    for name, image in zip(names, images):
        _save_image(image, base / "img_align_celeba" / name, "JPEG")
    rng = np.random.default_rng(0)

    def table(header: list[str] | None, rows: list[list[int]]) -> str:
        lines = [str(n), " ".join(header)] if header is not None else []
        lines += [" ".join([name, *map(str, row)]) for name, row in zip(names, rows)]
        return "\n".join(lines) + "\n"

    (base / "list_eval_partition.txt").write_text(table(None, [[p] for p in partition]))
    (base / "identity_CelebA.txt").write_text(table(None, [[int(k)] for k in rng.integers(1, 10178, n)]))
    (base / "list_bbox_celeba.txt").write_text(
        table(["image_id", "x_1", "y_1", "width", "height"], [[10, 20, 100, 140]] * n))
    landmarks = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y", "leftmouth_x",
                 "leftmouth_y", "rightmouth_x", "rightmouth_y"]
    (base / "list_landmarks_align_celeba.txt").write_text(
        table(landmarks, [[69, 109, 106, 113, 77, 142, 73, 152, 108, 154]] * n))
    (base / "list_attr_celeba.txt").write_text(
        table(list(CELEBA_ATTRIBUTES), rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES))).tolist()))


def write_imagenet_val(folder: pathlib.Path, per_class: int, n_classes: int = 4) -> None:
    """``<wnid>/ILSVRC2012_val_<8 digits>.JPEG`` (sizes around 500 x 375) and ``classes.tsv`` (wnid TAB name TAB
    ImageNet class index),
    as ``fetch.build_imagenet_subset`` arranges them (fewer classes)."""
    wnids = [f"n{1440764 + 1000 * k:08d}" for k in range(n_classes)]
    for k, wnid in enumerate(wnids):
        for j in range(per_class):
            h, w = (375, 500) if j % 2 == 0 else (500, 333)
            image = class_images(np.array([k]), (h, w, 3), n_classes, 100 * k + j)[0]
            _save_image(image, folder / wnid / f"ILSVRC2012_val_{n_classes * j + k + 1:08d}.JPEG", "JPEG")
    (folder / "classes.tsv").write_text("".join(f"{wnid}\tsynthetic class {k}\t{250 * k}\n"
                                                for k, wnid in enumerate(wnids)))


def write_oct(folder: pathlib.Path, per_class: int) -> None:
    """``{train,test}/{CNV,DME,DRUSEN,NORMAL}/<class>-<id>-<k>.jpeg``, greyscale 512 x 496, as
    ``fetch.arrange_oct`` leaves the Kermany archive."""
    classes = fetch.OCT_CLASSES
    for s, split in enumerate(("train", "test")):
        for k, cls in enumerate(classes):
            images = class_images(np.full(per_class, k), (496, 512), len(classes), 10 * s + k)
            for j, image in enumerate(images):
                _save_image(image, folder / split / cls / f"{cls}-{1000 + j}-{s + 1}.jpeg", "JPEG")


WRITERS: dict[str, Callable[[pathlib.Path, int], None]] = {
    "cifar10": lambda folder, n: write_cifar(folder, n, hundred=False),
    "cifar100": lambda folder, n: write_cifar(folder, n, hundred=True),
    "svhn": write_svhn,
    "mnist": lambda folder, n: write_mnist(folder, n, "MNIST"),
    "fashion_mnist": lambda folder, n: write_mnist(folder, n, "FashionMNIST"),
    "gtsrb": lambda folder, n: write_gtsrb(folder, max(1, n // 2)),
    "celeba": lambda folder, n: write_celeba(folder, 2 * n),
    "imagenet_val": write_imagenet_val,
    "oct": write_oct,
}
"""Per real dataset: a writer taking (folder, images per class and split); the dataset folder is ``<root>/NAME``."""


# --------------------------------------------------------------------------------------------------- manifest


def md5_file(path: pathlib.Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: pathlib.Path) -> None:
    """``folder/STANDIN.md5``: ``md5  relative/path`` of every file under ``folder`` (``md5sum -c`` reads it)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    (folder / MANIFEST).write_text("".join(f"{md5_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in files))


def refuse_real_data(folder: pathlib.Path) -> None:
    """Raise ``SystemExit`` unless ``folder`` is absent, empty or an earlier stand-in (it holds the manifest):
    the writer replaces a folder, and it must never replace real data (a manual OCT or ImageNet download)."""
    if folder.exists() and any(folder.iterdir()) and not (folder / MANIFEST).is_file():
        raise SystemExit(f"refusing to write stand-ins into {folder}: it holds files that are not stand-ins "
                         f"(no {MANIFEST}); choose an empty --root")


def write_dataset(name: str, root: pathlib.Path, per_class: int = 2) -> pathlib.Path:
    """Write the stand-in of real dataset ``name`` to ``root / name`` (replacing an earlier stand-in, never real
    data: :func:`refuse_real_data`) with its manifest."""
    import shutil

    folder = root / name
    refuse_real_data(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    WRITERS[name](folder, per_class)
    write_manifest(folder)
    return folder


def write_weights(arch: str, root: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Randomly initialised torchvision ``arch`` (1000 classes) saved as ``fetch_weights.py`` saves the real one."""
    import torch
    import torchvision.models as tvm

    folder = root / "weights"
    target = folder / f"{arch}.pth"
    if target.exists() and not target.with_name(target.name + ".standin").is_file():
        raise SystemExit(f"refusing to overwrite {target}: it is not a stand-in; choose an empty --root")
    torch.manual_seed(seed)
    path = fetch_weights.save_state(getattr(tvm, arch)(weights=None).state_dict(), arch, folder)
    path.with_name(path.name + ".standin").write_text("random weights written by data_scripts/synthetic.py\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"default: all; any of {', '.join(data.REAL_DATASETS)}, weights")
    parser.add_argument("--root", type=pathlib.Path, required=True,
                        help="folder to write into (never the real data folder); point $OODLIB_DATA at it")
    parser.add_argument("--per-class", type=int, default=2, help="images per class and split (default 2)")
    args = parser.parse_args(argv)
    names = args.names or [*data.REAL_DATASETS, "weights"]
    unknown = [n for n in names if n not in (*data.REAL_DATASETS, "weights")]
    if unknown:
        parser.error(f"unknown name(s) {', '.join(unknown)}; valid: {', '.join(data.REAL_DATASETS)}, weights")
    if args.per_class < 1:
        parser.error("--per-class must be >= 1")
    root = args.root.expanduser().resolve()
    if root == (REPO / "data").resolve():
        parser.error(f"--root {root} is the repository's real data folder; choose an empty folder")
    for name in names:
        if name == "weights":
            for arch in data.PRETRAINED_ARCHS:
                print(f"{arch}: {write_weights(arch, root)}")
        else:
            folder = write_dataset(name, root, args.per_class)
            print(f"{name}: {folder} fingerprint {data.fingerprint(name, folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
