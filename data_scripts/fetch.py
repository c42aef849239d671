"""Fetch the real datasets into the data folder (``data/`` or ``$OODLIB_DATA``). Needs internet access.

Never run by the book build: ``oodlib.data.load_dataset`` only reads what this script put on disk, and names this
script in its error message when something is missing.

    python data_scripts/fetch.py --list
    python data_scripts/fetch.py cifar10 svhn [--root DIR]
    python data_scripts/fetch.py all                                   # every automatically downloadable set
    python data_scripts/fetch.py imagenet_val --imagenet-archives DIR  # DIR holds the ILSVRC2012 val tar + devkit
    python data_scripts/fetch.py oct --oct-archive OCT2017.tar.gz      # Kermany et al. (2018), from Mendeley Data
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from oodlib import data  # noqa: E402  (names and folders live in one place: oodlib.data)

IMAGENET_CLASSES = 200
IMAGENET_PER_CLASS = 5
IMAGENET_SEED = 0
OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")

SIZES = {
    "cifar10": "~170 MB", "cifar100": "~170 MB", "svhn": "~250 MB (train + test .mat)", "mnist": "~55 MB",
    "fashion_mnist": "~80 MB", "gtsrb": "~350 MB", "celeba": "~1.5 GB",
    "imagenet_val": "~130 MB (from the 6.3 GB val tarball)",
    "oct": "~6 GB (OCT2017, 84k images)",
}


def _cifar(cls_name: str) -> Callable[[pathlib.Path], None]:
    def fetch(folder: pathlib.Path) -> None:
        import torchvision.datasets as tvd

        for train in (True, False):
            getattr(tvd, cls_name)(str(folder), train=train, download=True)
    return fetch


def _by_split(cls_name: str, splits: tuple[str, ...]) -> Callable[[pathlib.Path], None]:
    def fetch(folder: pathlib.Path) -> None:
        import torchvision.datasets as tvd

        for split in splits:
            getattr(tvd, cls_name)(str(folder), split=split, download=True)
    return fetch


DOWNLOADERS: dict[str, Callable[[pathlib.Path], None]] = {
    "cifar10": _cifar("CIFAR10"),
    "cifar100": _cifar("CIFAR100"),
    "svhn": _by_split("SVHN", ("train", "test")),
    "mnist": _cifar("MNIST"),
    "fashion_mnist": _cifar("FashionMNIST"),
    "gtsrb": _by_split("GTSRB", ("train", "test")),
    "celeba": _by_split("CelebA", ("all",)),
}
"""torchvision's own downloads, which verify each file's MD5 checksum."""

IMAGENET_HELP = f"""\
imagenet_val: ImageNet may not be redistributed; fetch it yourself under its license.
  1. Sign in at https://image-net.org, accept the terms and download from the ILSVRC2012 page
       ILSVRC2012_img_val.tar        (6.3 GB, the 50,000 validation images)
       ILSVRC2012_devkit_t12.tar.gz  (2.5 MB, the labels)
     into one folder, say ~/ilsvrc.
  2. python data_scripts/fetch.py imagenet_val --imagenet-archives ~/ilsvrc
     torchvision checks both archives' MD5, then this script keeps {IMAGENET_CLASSES} classes x
     {IMAGENET_PER_CLASS} images = {IMAGENET_CLASSES * IMAGENET_PER_CLASS} images (chosen with seed {IMAGENET_SEED}) in \
<data>/imagenet_val/<wnid>/
     and wnid, class name and ImageNet class index per line in <data>/imagenet_val/classes.tsv."""

OCT_HELP = """\
oct: retinal OCT images of Kermany et al. (2018), Cell 172(5), "Identifying medical diagnoses and treatable
  diseases by image-based deep learning"; CC BY 4.0, Mendeley Data doi:10.17632/rscbjbr9sj.
  1. Download the OCT archive (OCT2017.tar.gz, or the whole ZhangLabData.zip) from
       https://data.mendeley.com/datasets/rscbjbr9sj
  2. python data_scripts/fetch.py oct --oct-archive PATH   (the archive or a folder it was extracted to)
     The script finds the folder with train/ and test/ ({classes}) and arranges
     <data>/oct/{{train,test}}/<class>/*.jpeg.""".format(classes=", ".join(OCT_CLASSES))


def fetch_auto(name: str, root: pathlib.Path) -> None:
    """Download ``name`` with torchvision into ``root / name``."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if name == "celeba":
        print("note: CelebA lives on Google Drive, which often refuses downloads ('quota exceeded'); if so, retry "
              "later or place the files in", folder / "celeba", "by hand (see data_scripts/README.md)")
    DOWNLOADERS[name](folder)


def build_imagenet_subset(archives: pathlib.Path, root: pathlib.Path) -> None:
    """Parse the ILSVRC2012 validation archives with torchvision and copy a fixed-seed class-balanced subset."""
    import numpy as np
    from torchvision.datasets import ImageNet

    full = ImageNet(str(archives), split="val")  # extracts archives/val/<wnid>/ on first use
    rng = np.random.default_rng(IMAGENET_SEED)
    chosen = np.sort(rng.choice(len(full.wnids), size=IMAGENET_CLASSES, replace=False))
    by_class: dict[int, list[str]] = {}
    for path, label in full.imgs:
        by_class.setdefault(label, []).append(path)
    target = root / "imagenet_val"
    root.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".imagenet_val.", dir=root))
    for label in chosen:
        files = sorted(by_class[int(label)])
        keep = np.sort(rng.choice(len(files), size=IMAGENET_PER_CLASS, replace=False))
        out = staging / full.wnids[label]
        out.mkdir()
        for k in keep:
            shutil.copy2(files[k], out / pathlib.Path(files[k]).name)
    # wnid, name and ImageNet class index (torchvision's label = the pretrained models' output index)
    lines = [f"{full.wnids[label]}\t{full.classes[label][0]}\t{label}" for label in chosen]
    (staging / "classes.tsv").write_text("\n".join(lines) + "\n")
    _replace(staging, target)


def arrange_oct(source: pathlib.Path, root: pathlib.Path) -> None:
    """Extract (if an archive) and move the Kermany OCT train/test class folders to ``root / "oct"``."""
    root.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".oct.", dir=root))
    if source.is_dir():
        tree = source
    else:
        shutil.unpack_archive(str(source), str(staging / "extracted"), filter="data")
        tree = staging / "extracted"
    found = find_oct_tree(tree)
    if found is None:
        shutil.rmtree(staging)
        raise SystemExit(f"no folder with train/ and test/ holding {', '.join(OCT_CLASSES)} found in {source}")
    result = staging / "oct"
    result.mkdir()
    for split in ("train", "test"):
        (result / split).mkdir()
        for cls in OCT_CLASSES:
            mover = shutil.copytree if source.is_dir() else shutil.move
            mover(str(found / split / cls), str(result / split / cls))
    _replace(result, root / "oct")
    shutil.rmtree(staging)


def find_oct_tree(tree: pathlib.Path) -> pathlib.Path | None:
    """The first folder under ``tree`` (itself included) with ``train/<class>`` and ``test/<class>`` folders."""
    for candidate in [tree, *sorted(p for p in tree.rglob("*") if p.is_dir())]:
        if all((candidate / split / cls).is_dir() for split in ("train", "test") for cls in OCT_CLASSES):
            return candidate
    return None


def _replace(new: pathlib.Path, target: pathlib.Path) -> None:
    """Put the finished folder ``new`` at ``target`` (replacing an older one) with a rename."""
    if target.exists():
        shutil.rmtree(target)
    new.rename(target)


def list_datasets(root: pathlib.Path) -> None:
    """Print every dataset, how it is obtained, and whether it is present under ``root``."""
    print(f"data folder: {root}  (set ${data.DATA_DIR_ENV} to change it)\n")
    for name in data.DATASETS:
        if name in data.EMBEDDED_DATASETS:
            how, state = "embedded in an installed package", "always available"
        else:
            how = "torchvision download" if name in DOWNLOADERS else "manual (license), then this script"
            fp = data.fingerprint(name, root / name)
            state = "missing" if fp == "missing" else f"present, fingerprint {fp}"
            how += f", {SIZES[name]}"
        print(f"  {name:14s} {how:72s} {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"datasets to fetch ('all' = {', '.join(DOWNLOADERS)}); one of "
                             f"{', '.join(data.REAL_DATASETS)}")
    parser.add_argument("--root", type=pathlib.Path, default=None,
                        help="data folder; each dataset goes to DIR/NAME (default: data_dir(), i.e. "
                             f"${data.DATA_DIR_ENV} or <repo>/data)")
    parser.add_argument("--list", action="store_true", help="list datasets and whether they are present")
    parser.add_argument("--imagenet-archives", type=pathlib.Path, metavar="DIR",
                        help="folder with ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz")
    parser.add_argument("--oct-archive", type=pathlib.Path, metavar="PATH",
                        help="the Kermany OCT archive (.tar.gz / .zip) or the folder it was extracted to")
    args = parser.parse_args(argv)
    root = (args.root or data.data_dir()).expanduser().resolve()
    if args.list or not args.names:
        list_datasets(root)
        return 0
    names = [n for name in args.names for n in (DOWNLOADERS if name == "all" else [name])]
    unknown = [n for n in names if n not in data.DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; valid: {', '.join(data.DATASETS)}, all")
    failed = []
    for name in names:
        print(f"== {name} -> {root / name}")
        try:
            if name in data.EMBEDDED_DATASETS:
                print(f"{name} is embedded in an installed package; nothing to fetch")
            elif name in DOWNLOADERS:
                fetch_auto(name, root)
            elif name == "imagenet_val" and args.imagenet_archives:
                build_imagenet_subset(args.imagenet_archives.expanduser().resolve(), root)
            elif name == "oct" and args.oct_archive:
                arrange_oct(args.oct_archive.expanduser().resolve(), root)
            else:
                print(IMAGENET_HELP if name == "imagenet_val" else OCT_HELP)
                continue
        except Exception as err:  # report every dataset, then fail
            print(f"FAILED {name}: {type(err).__name__}: {err}", file=sys.stderr)
            failed.append(name)
            continue
        if name in data.REAL_DATASETS:
            print(f"{name}: fingerprint {data.fingerprint(name, root / name)}")
    if failed:
        print(f"failed: {', '.join(failed)} (these downloads need internet access)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
