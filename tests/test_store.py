"""The model store: cache keys, atomic writes, checksums, concurrent use, weights_only loads."""

import json
import multiprocessing as mp
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from oodlib import store, training
from oodlib.store import ModelSpec, ModelStore, atomic_write_bytes, cache_key

TINY = ModelSpec.make("small_cnn", "digits", epochs=1, seed=0, options={"width": 4, "latent_dim": 8})


@pytest.fixture()
def tmp_store(tmp_path, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path))
    return ModelStore(tmp_path / "models")


def test_key_covers_every_field_of_the_spec():
    variants = [replace(TINY, epochs=2), replace(TINY, seed=1), replace(TINY, arch="mlp"),
                replace(TINY, dataset="mnist5k"), replace(TINY, image_size=16), replace(TINY, classes=(0, 1)),
                ModelSpec.make("small_cnn", "digits", epochs=1, options={"width": 8, "latent_dim": 8}),
                ModelSpec.make("small_cnn", "digits", epochs=1, options={"width": 4, "latent_dim": 8},
                               recipe_options={"lr": 0.01})]
    keys = {cache_key(TINY)} | {cache_key(v) for v in variants}
    assert len(keys) == len(variants) + 1


def test_key_is_stable_under_option_order():
    assert cache_key(TINY) == cache_key(ModelSpec.make("small_cnn", "digits", epochs=1, seed=0,
                                                       options={"latent_dim": 8, "width": 4}))


def test_key_changes_with_training_source_and_only_with_it(tmp_path, monkeypatch):
    from oodlib import plots, training

    before = cache_key(TINY)
    copy = tmp_path / "training.py"
    copy.write_bytes(Path(training.__file__).read_bytes())
    monkeypatch.setattr(training, "__file__", str(copy))
    unedited = cache_key(TINY)
    copy.write_bytes(copy.read_bytes() + b"\n# an edit to the training code\n")
    assert cache_key(TINY) != unedited
    monkeypatch.undo()
    assert cache_key(TINY) == before
    unrelated = tmp_path / "plots.py"
    unrelated.write_bytes(Path(plots.__file__).read_bytes() + b"\n# an edit to the plotting code\n")
    monkeypatch.setattr(plots, "__file__", str(unrelated))
    assert cache_key(TINY) == before  # plotting code does not determine a trained model


def test_trains_once_then_loads_identical_weights(tmp_store):
    first = tmp_store.get(TINY, device="cpu")
    weights, meta, _ = tmp_store.paths(TINY)
    assert weights.exists() and meta.exists()
    info = json.loads(meta.read_text())
    test = store.training_data(TINY, "test")
    assert info["test_accuracy"] == training.accuracy(first, test.x, test.y)
    assert info["geometry"]["in_channels"] == 1
    mtime = weights.stat().st_mtime_ns
    second = tmp_store.get(TINY, device="cpu")
    assert weights.stat().st_mtime_ns == mtime  # loaded, not retrained
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not second.training


def test_training_is_deterministic(tmp_path):
    a = ModelStore(tmp_path / "a").get(TINY, device="cpu")
    b = ModelStore(tmp_path / "b").get(TINY, device="cpu")
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_corrupt_checkpoint_is_rebuilt_not_loaded(tmp_store, monkeypatch):
    tmp_store.get(TINY, device="cpu")
    weights, _, _ = tmp_store.paths(TINY)
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called on a corrupt file"))
    with pytest.warns(UserWarning, match="fails its checksum"):
        assert tmp_store._load(TINY, *tmp_store.paths(TINY)[:2]) is None
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="fails its checksum"):
        model = tmp_store.get(TINY, device="cpu")
    assert weights.read_bytes() == good  # deterministic retraining reproduces the same file
    assert isinstance(model, torch.nn.Module)


def test_loads_use_weights_only(tmp_store, monkeypatch):
    tmp_store.get(TINY, device="cpu")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    tmp_store.get(TINY, device="cpu")
    assert calls == [True]


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left behind


def test_atomic_write_gives_the_permissions_of_a_created_file(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "results.json", b"{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def _get_in_process(root: str, queue) -> None:
    model = ModelStore(root).get(TINY, device="cpu")
    queue.put(float(sum(p.sum() for p in model.state_dict().values() if p.is_floating_point())))


def test_two_processes_at_once_do_not_corrupt_the_store(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_get_in_process, args=(str(tmp_path / "models"), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs)
    sums = [queue.get(timeout=5) for _ in procs]
    assert sums[0] == sums[1]
    files = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith("."))
    assert len(files) == 2  # one checkpoint + its metadata, no partial files
    ModelStore(tmp_path / "models").get(TINY, device="cpu")  # and it loads cleanly


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="vgg99"), "unknown architecture 'vgg99'"),
    (dict(dataset="imagenet22k"), "unknown dataset 'imagenet22k'"),
    (dict(recipe="magic"), "unknown recipe 'magic'"),
])
def test_invalid_specs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        replace(TINY, **kwargs).validate()


def test_one_protocol_serves_classifiers_autoencoders_and_flows(tmp_path, monkeypatch):
    from oodlib.autoencoder import AutoEncoderSpec
    from oodlib.flows import FlowSpec

    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path))
    specs = {"models": TINY, "autoencoders": AutoEncoderSpec(dataset="digits"), "flows": FlowSpec(image_size=8)}
    for folder, spec in specs.items():
        key = cache_key(spec)
        assert len(key) == 20 and store.stem(spec) == f"{spec.label}-{key}"
        assert ModelStore().paths(spec)[0] == tmp_path / folder / f"{spec.label}-{key}.pt"
        assert store.info(spec) is None  # nothing trained yet
    with pytest.raises(TypeError, match="not dict"):
        cache_key({"arch": "small_cnn"})


def test_key_covers_the_recipe_module_and_not_an_unrelated_recipe(tmp_path, monkeypatch):
    from oodlib import recipes

    spec = replace(TINY, recipe="outlier_exposure")
    before = cache_key(spec)
    for module, changes in ((recipes.jem, False), (recipes.common, True), (recipes.outlier_exposure, True)):
        copy = tmp_path / Path(module.__file__).name
        copy.write_bytes(Path(module.__file__).read_bytes() + b"\n# an edit\n")
        monkeypatch.setattr(module, "__file__", str(copy))
        assert (cache_key(spec) != before) == changes, module.__name__
        monkeypatch.undo()
    assert cache_key(spec) == before


def test_warm_starts_come_from_the_standard_classifier_of_the_same_spec():
    aoe = replace(TINY, recipe="aoe", seed=3)
    base = training.warm_start_spec(aoe)
    assert base == replace(TINY, recipe="standard", seed=3, epochs=training.WARM_STARTS["aoe"])
    assert training.warm_start_spec(ModelSpec.make("small_cnn", "digits", recipe="aoe", epochs=1,
                                                   recipe_options={"base_epochs": 0})) is None
    assert training.warm_start_spec(replace(TINY, recipe="atom")) is None  # ATOM trains from scratch by default
    assert training.warm_start_spec(ModelSpec.make("small_cnn", "digits", recipe="atom", epochs=1,
                                                   recipe_options={"base_epochs": 2})).epochs == 2
    assert training.warm_start_spec(TINY) is None  # the standard recipe has no warm start
