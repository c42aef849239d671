"""Fetch torchvision's ImageNet-pretrained ResNet-18 and DenseNet-121 weights (Section 3.1 of the paper attacks
these PyTorch-pretrained models). Needs internet access; never run by the book build.

    python data_scripts/fetch_weights.py                 # both
    python data_scripts/fetch_weights.py resnet18 [--root DIR]

Writes ``<data>/weights/<arch>.pth`` (a plain state dict, loadable with ``torch.load(..., weights_only=True)``) and
``<data>/weights/<arch>.pth.sha256``; ``oodlib.data.pretrained_weights_path(arch)`` finds and verifies them.
torchvision checks the hash embedded in each weights file name while downloading (``check_hash=True``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from oodlib import data  # noqa: E402

WEIGHTS = {"resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"), "densenet121": ("DenseNet121_Weights", "IMAGENET1K_V1")}


def fetch(arch: str, folder: pathlib.Path) -> pathlib.Path:
    """Download ``arch``'s weights with hash check, save them atomically to ``folder``, record their sha256."""
    import torchvision.models as tvm

    enum_name, member = WEIGHTS[arch]
    weights = getattr(getattr(tvm, enum_name), member)
    return save_state(weights.get_state_dict(progress=True, check_hash=True), arch, folder)


def save_state(state: dict, arch: str, folder: pathlib.Path) -> pathlib.Path:
    """Save a state dict atomically as ``folder/<arch>.pth`` and record its sha256 in ``<arch>.pth.sha256``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{arch}.pth"
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    path.with_name(path.name + ".sha256").write_text(f"{data.sha256_file(path)}  {path.name}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archs", nargs="*", metavar="ARCH", help=f"any of {', '.join(data.PRETRAINED_ARCHS)} "
                                                                 "(default: all)")
    parser.add_argument("--root", type=pathlib.Path, default=None,
                        help="data folder; weights go to DIR/weights (default: data_dir(), i.e. "
                             f"${data.DATA_DIR_ENV} or <repo>/data)")
    args = parser.parse_args(argv)
    archs = args.archs or list(data.PRETRAINED_ARCHS)
    unknown = [a for a in archs if a not in WEIGHTS]
    if unknown:
        parser.error(f"unknown architecture(s) {', '.join(unknown)}; valid: {', '.join(data.PRETRAINED_ARCHS)}")
    folder = ((args.root or data.data_dir()).expanduser().resolve()) / "weights"
    for arch in archs:
        path = fetch(arch, folder)
        print(f"{arch}: {path} sha256 {data.sha256_file(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
