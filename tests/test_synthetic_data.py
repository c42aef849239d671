"""data_scripts/synthetic.py writes stand-ins that torchvision's own dataset classes read, in the layouts the real
fetchers produce; MD5-checked sets are read only with the explicit stand-in switch, and still checked."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest
import torch

from oodlib import data

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "data_scripts"


def _load_script(name: str):
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic = _load_script("synthetic")

EXPECTED = {  # name: (split, samples with per_class=1, channels, classes)
    "cifar10": ("train", 50, 3, 10), "cifar100": ("train", 400, 3, 100), "svhn": ("train", 10, 3, 10),
    "mnist": ("test", 10, 1, 10), "fashion_mnist": ("train", 10, 1, 10), "gtsrb": ("test", 43, 3, 43),
    "celeba": ("valid", 2, 3, 1), "imagenet_val": ("val", 4, 3, 1000), "oct": ("train", 4, 1, 4),
}
MD5_CHECKED = ("cifar10", "cifar100", "svhn", "celeba")


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    assert synthetic.main(["--root", str(root), "--per-class", "1"]) == 0
    return root


@pytest.mark.parametrize("name", data.REAL_DATASETS)
def test_every_standin_loads_through_oodlib_with_the_switch(standins, monkeypatch, name):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(standins))
    monkeypatch.setenv(data.STANDIN_ENV, "1")
    split, n, channels, n_classes = EXPECTED[name]
    images = data.load_dataset(name, split)
    assert images.x.shape[:2] == (n, channels) and images.x.dtype == torch.float32
    assert len(images.classes) == n_classes and int(images.y.max()) < n_classes
    assert 0.0 <= float(images.x.min()) and float(images.x.max()) <= 1.0
    assert float(images.x.std()) > 0.05  # real pixels were decoded, not zeros


def test_torchvision_reads_the_layouts_with_its_own_code(standins, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setenv(data.STANDIN_ENV, "1")
    cifar = data._dataset_class("CIFAR10", standins / "cifar10")(str(standins / "cifar10"), train=True)
    assert issubclass(type(cifar), tvd.CIFAR10) and len(cifar) == 50 and cifar.data.shape == (50, 32, 32, 3)
    assert cifar.classes[0] == "airplane" and sorted(set(cifar.targets)) == list(range(10))
    svhn = data._dataset_class("SVHN", standins / "svhn")(str(standins / "svhn"), split="test")
    assert svhn.data.shape == (10, 3, 32, 32) and sorted(svhn.labels.tolist()) == list(range(10))
    celeba = data._dataset_class("CelebA", standins / "celeba")(str(standins / "celeba"), split="all")
    assert len(celeba) == 6 and celeba.attr.shape == (6, 40) and celeba[0][0].size == (178, 218)
    mnist = tvd.FashionMNIST(str(standins / "fashion_mnist"), train=False)  # no MD5: torchvision's class itself
    assert mnist.data.shape == (10, 28, 28) and sorted(mnist.targets.tolist()) == list(range(10))
    gtsrb = tvd.GTSRB(str(standins / "gtsrb"), split="train")
    assert len(gtsrb) == 43 and sorted({label for _, label in gtsrb._samples}) == list(range(43))
    oct_test = tvd.ImageFolder(str(standins / "oct" / "test"))
    assert oct_test.classes == list(synthetic.fetch.OCT_CLASSES)


def test_class_means_differ_so_a_classifier_can_learn(standins, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(standins))
    monkeypatch.setenv(data.STANDIN_ENV, "1")
    images = data.load_dataset("cifar10", "train")
    means = torch.stack([images.x[images.y == c].mean(0) for c in range(10)])
    assert float((means[0] - means[1]).abs().mean()) > 0.05


@pytest.mark.parametrize("name", data.REAL_DATASETS)
def test_standins_are_refused_without_the_switch(standins, monkeypatch, name):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(standins))
    monkeypatch.delenv(data.STANDIN_ENV, raising=False)
    with pytest.raises(data.MissingDatasetError, match=data.STANDIN_ENV):
        data.load_dataset(name, EXPECTED[name][0])


def test_a_corrupted_standin_fails_its_manifest_check(tmp_path, monkeypatch):
    synthetic.write_dataset("cifar10", tmp_path, per_class=1)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(data.STANDIN_ENV, "1")
    with pytest.raises(data.MissingDatasetError, match="corrupted"):
        data.load_dataset("cifar10", "train")


def test_the_switch_does_not_change_the_official_sums_without_a_manifest(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setenv(data.STANDIN_ENV, "1")
    assert data._dataset_class("CIFAR10", tmp_path) is tvd.CIFAR10
    monkeypatch.delenv(data.STANDIN_ENV)
    (tmp_path / data.STANDIN_MANIFEST).write_text("0" * 32 + "  data_batch_1\n")
    assert data._dataset_class("CIFAR10", tmp_path) is tvd.CIFAR10


def test_swap_md5_replaces_only_listed_files():
    sums = {"a.txt": "f" * 32}
    table = [("id", "0" * 32, "a.txt"), ("id2", "1" * 32, "b.zip")]
    assert data._swap_md5(table, sums) == [("id", "f" * 32, "a.txt"), ("id2", "1" * 32, "b.zip")]
    assert data._swap_md5({"filename": "a.txt", "key": "k", "md5": "0" * 32}, sums)["md5"] == "f" * 32
    assert data._swap_md5({"train": ["http://x/a.txt", "a.txt", "2" * 32]}, sums)["train"][2] == "f" * 32


def test_random_weights_are_verified_like_fetched_ones(tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(data.STANDIN_ENV, raising=False)
    synthetic.write_weights("resnet18", tmp_path)
    with pytest.raises(data.MissingDatasetError, match=data.STANDIN_ENV):  # random weights are never taken as real
        data.pretrained_weights_path("resnet18")
    monkeypatch.setenv(data.STANDIN_ENV, "1")
    path = data.pretrained_weights_path("resnet18")
    assert path.with_name("resnet18.pth.sha256").read_text().split()[0] == data.sha256_file(path)
    tvm.resnet18(weights=None).load_state_dict(torch.load(path, weights_only=True))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(data.MissingDatasetError, match="sha256 mismatch"):
        data.pretrained_weights_path("resnet18")


def test_idx_files_match_the_mnist_format(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    (tmp_path / "i").write_bytes(synthetic._idx(images))
    (tmp_path / "l").write_bytes(synthetic._idx(np.array([3, 7], dtype=np.uint8)))
    assert torch.equal(read_image_file(str(tmp_path / "i")), torch.from_numpy(images))
    assert read_label_file(str(tmp_path / "l")).tolist() == [3, 7]


def test_the_writer_never_replaces_real_data(tmp_path):
    download = tmp_path / "oct" / "manual" / "MY_DOWNLOAD.jpeg"
    download.parent.mkdir(parents=True)
    download.write_bytes(b"x")
    with pytest.raises(SystemExit, match="not stand-ins"):
        synthetic.main(["--root", str(tmp_path), "oct"])
    assert download.read_bytes() == b"x"
    real_weights = tmp_path / "weights" / "resnet18.pth"
    real_weights.parent.mkdir()
    real_weights.write_bytes(b"fetched")
    with pytest.raises(SystemExit, match="not a stand-in"):
        synthetic.write_weights("resnet18", tmp_path)
    assert real_weights.read_bytes() == b"fetched"
    with pytest.raises(SystemExit):
        synthetic.main(["--root", str(synthetic.REPO / "data"), "mnist"])
    synthetic.main(["--root", str(tmp_path), "mnist"])  # an earlier stand-in is replaced
    synthetic.main(["--root", str(tmp_path), "mnist"])


def test_cli_refuses_unknown_names(tmp_path):
    with pytest.raises(SystemExit):
        synthetic.main(["--root", str(tmp_path), "imagenet"])


def test_imagenet_val_is_labelled_in_imagenet_class_space(standins, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setenv(data.DATA_DIR_ENV, str(standins))
    monkeypatch.setenv(data.STANDIN_ENV, "1")
    images = data.load_dataset("imagenet_val", "val")
    assert sorted(set(images.y.tolist())) == [0, 250, 500, 750]  # the indices classes.tsv gives, not 0..3
    assert images.classes[250] == "synthetic class 1" and images.classes[1] == "imagenet class 1"
    old = tmp_path / "imagenet_val"
    shutil.copytree(standins / "imagenet_val", old)
    lines = (old / "classes.tsv").read_text().splitlines()
    (old / "classes.tsv").write_text("".join(line.rsplit("\t", 1)[0] + "\n" for line in lines))
    with pytest.raises(data.MissingDatasetError, match="ImageNet-index"):
        data.load_dataset("imagenet_val", "val", root=old)
