"""The model store: a notebook asks for a model by its spec; the store returns the cached one or trains it.

- The cache key covers everything that determines the model: the spec (architecture and its options, dataset,
  image size, channels, classes, recipe and its options, epochs, seed), the source of the training code
  (``models.py``, ``training.py``, ``data.py`` and any module that registered the recipe), the dataset's
  fingerprint and the torch version.
- Writes are atomic (temporary file + ``os.replace``), and a per-key file lock makes two processes that ask for
  the same model at once train it once.
- Loads use ``torch.load(..., weights_only=True)`` after checking the file's SHA-256 against its metadata; a
  corrupt or truncated checkpoint is never loaded: it is rebuilt.

The store lives in ``$OODLIB_CACHE/models`` (default ``<repo>/.cache/models``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from . import data, models, training

CACHE_ENV = "OODLIB_CACHE"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """``$OODLIB_CACHE`` if set, else ``<repo>/.cache``."""
    return Path(os.environ.get(CACHE_ENV, _REPO_ROOT / ".cache"))


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines a trained model.

    ``options`` go to the architecture's constructor (e.g. ``width``, ``latent_dim``, ``norm``);
    ``recipe_options`` to the training recipe (e.g. ``lr``, ``batch_size``). ``classes`` keeps a subset of the
    dataset's labels (relabelled 0..k-1), e.g. the 4-class stand-in for OCT in Appendix B.1.
    """

    arch: str
    dataset: str
    recipe: str = "standard"
    epochs: int = 3
    seed: int = 0
    image_size: int | None = None
    channels: int | None = None
    classes: tuple[int, ...] | None = None
    options: tuple[tuple[str, Any], ...] = field(default=())
    recipe_options: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def make(cls, arch: str, dataset: str, *, options: dict | None = None, recipe_options: dict | None = None,
             classes: list[int] | tuple[int, ...] | None = None, **kw: Any) -> "ModelSpec":
        """Build a spec from plain dicts/lists (what a notebook's parameters hold)."""
        return cls(arch=arch, dataset=dataset, options=_frozen_items(options), classes=tuple(classes) if classes
                   else None, recipe_options=_frozen_items(recipe_options), **kw)

    def option(self, name: str, default: Any = None) -> Any:
        """A recipe option's value (``recipe_options``), or ``default``."""
        return dict(self.recipe_options).get(name, default)

    def validate(self) -> None:
        from . import defenses, detectors  # noqa: F401  (importing registers their training recipes)

        if self.arch not in models.ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; valid choices: {', '.join(models.ARCHS)}")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid choices: {', '.join(data.DATASETS)}")
        if self.recipe not in training.RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; valid choices: {', '.join(training.RECIPES)}")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ValueError(f"epochs must be a non-negative integer, got {self.epochs!r}")

    @property
    def label(self) -> str:
        return f"{self.arch}-{self.dataset}-{self.recipe}"


def _frozen_items(d: dict | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (d or {}).items()))


def _source_hash(spec: ModelSpec) -> str:
    """SHA-256 over the source files whose code determines the trained model: the models, training and data
    modules, the attack package (adversarial recipes use it) and every module of the package that registered the
    recipe (a recipe may use its siblings)."""
    files = {Path(m.__file__) for m in (models, training, data)}
    files |= set((Path(__file__).parent / "attack").glob("*.py"))
    recipe_module = inspect.getmodule(training.RECIPES[spec.recipe])
    if recipe_module is not None and getattr(recipe_module, "__file__", None):
        package = Path(recipe_module.__file__).parent
        files |= set(package.glob("*.py")) if package != Path(__file__).parent else {Path(recipe_module.__file__)}
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(spec: ModelSpec) -> str:
    """The store key: a hash of the spec, the training code, the data's fingerprint and the torch version."""
    payload = {"spec": asdict(spec), "code": _source_hash(spec), "data": data.fingerprint(spec.dataset),
               "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``fcntl.flock``) on ``path``, released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_paths(root: Path, stem: str) -> tuple[Path, Path, Path]:
    """Where a cached module lives: ``<root>/<stem>.pt`` (state dict), ``<stem>.json`` (facts and the weights'
    SHA-256) and the lock file ``.<stem>.lock``."""
    return root / f"{stem}.pt", root / f"{stem}.json", root / f".{stem}.lock"


def load_checked(weights: Path, meta_path: Path, build: Callable[[dict], nn.Module], kind: str = "model"
                 ) -> nn.Module | None:
    """The module stored at ``weights`` (built with ``build(meta)``, loaded with ``weights_only=True``), or None
    when either file is missing or the weights fail the checksum recorded beside them (a warning says so)."""
    if not (weights.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if _sha256(weights) != meta.get("sha256"):
        warnings.warn(f"cached {kind} {weights.name} fails its checksum (corrupt or truncated); rebuilding it")
        return None
    module = build(meta)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module


def save_checked(module: nn.Module, weights: Path, meta_path: Path, meta: dict) -> None:
    """Store ``module``'s state dict and ``meta`` plus the weights' SHA-256, each file written atomically."""
    payload = _state_bytes({k: v.detach().cpu() for k, v in module.state_dict().items()})
    atomic_write_bytes(weights, payload)
    meta = {**meta, "sha256": hashlib.sha256(payload).hexdigest()}
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())


def cached_module(root: Path, stem: str, build: Callable[[dict], nn.Module],
                  train: Callable[[], tuple[nn.Module, dict]], kind: str = "model", read_back: bool = False
                  ) -> nn.Module:
    """The store's extension point for any trained module (the classifiers here, the auto-encoder of Section 2.4,
    the flows of Section 3.2): under a file lock, load it from ``root`` when cached and intact
    (:func:`load_checked`), else ``train()`` → ``(module, meta)`` and store both (:func:`save_checked`), so
    concurrent callers train once. ``read_back`` returns the stored copy instead of the trained object, so a
    fresh and a cached module take the same path."""
    weights, meta_path, lock = cached_paths(root, stem)
    with file_lock(lock):
        module = load_checked(weights, meta_path, build, kind)
        if module is None:
            module, meta = train()
            save_checked(module, weights, meta_path, meta)
            if read_back:
                module = load_checked(weights, meta_path, build, kind)
    if module is None:
        raise RuntimeError(f"the {kind} just stored at {weights} cannot be read back")
    return module


def training_data(spec: ModelSpec, split: str = "train") -> "data.ImageSet":
    """The dataset split a spec trains (or is evaluated) on, resized and class-restricted as the spec says."""
    images = data.load_dataset(spec.dataset, split, image_size=spec.image_size, channels=spec.channels)
    return images.restrict_classes(spec.classes) if spec.classes else images


def input_geometry(images: "data.ImageSet") -> dict[str, int]:
    """What sizes a classifier for ``images``: channels, image size and number of classes."""
    return {"in_channels": images.x.shape[1], "image_size": images.x.shape[-1], "num_classes": len(images.classes)}


def build_untrained(spec: ModelSpec, geometry: dict[str, int]) -> models.Classifier:
    """The spec's architecture with the given geometry, initialised from ``spec.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return models.build_model(spec.arch, **geometry, **dict(spec.options))


class ModelStore:
    """Cached trained models, keyed by :func:`cache_key`."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "models"

    def paths(self, spec: ModelSpec) -> tuple[Path, Path, Path]:
        return cached_paths(self.root, f"{spec.label}-{cache_key(spec)}")

    def info(self, spec: ModelSpec) -> dict | None:
        """The metadata recorded when the model was trained, or None if it is not cached."""
        _, meta_path, _ = self.paths(spec)
        return json.loads(meta_path.read_text()) if meta_path.exists() else None

    def get(self, spec: ModelSpec, device: str | torch.device = "auto", verbose: bool = False
            ) -> models.Classifier:
        """The trained model for ``spec`` in eval mode on ``device``: loaded if cached and intact, else trained
        (once, even when several processes ask at the same time) and stored."""
        spec.validate()
        dev = models.resolve_device(device)
        model = cached_module(self.root, f"{spec.label}-{cache_key(spec)}",
                              lambda meta: build_untrained(spec, meta["geometry"]),
                              lambda: self._train(spec, dev, verbose))
        return model.to(dev).eval()

    def _load(self, spec: ModelSpec, weights: Path, meta_path: Path) -> models.Classifier | None:
        return load_checked(weights, meta_path, lambda meta: build_untrained(spec, meta["geometry"]))

    def _train(self, spec: ModelSpec, dev: torch.device, verbose: bool) -> tuple[models.Classifier, dict]:
        train, test = training_data(spec, "train"), training_data(spec, "test")
        geometry = input_geometry(train)
        if spec.recipe == "pretrained":  # torchvision's ImageNet weights keep their 1000-class head
            geometry["num_classes"] = 1000
        model = build_untrained(spec, geometry).to(dev)
        if verbose:
            print(f"training {spec.label} for {spec.epochs} epochs on {len(train)} images ...")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            facts = training.RECIPES[spec.recipe](model, train, spec, dev)
        model.eval()
        facts["test_accuracy"] = training.accuracy(model, test.x, test.y)
        return model, {"spec": asdict(spec), "key": cache_key(spec), "geometry": geometry, **facts}


def _state_bytes(state: dict) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


_DEFAULT_STORE: ModelStore | None = None


def get_model(spec: ModelSpec | None = None, device: str | torch.device = "auto", **spec_kw: Any
              ) -> models.Classifier:
    """The trained model for ``spec`` (or ``ModelSpec.make(**spec_kw)``) from the default store."""
    global _DEFAULT_STORE
    if _DEFAULT_STORE is None or _DEFAULT_STORE.root != cache_dir() / "models":
        _DEFAULT_STORE = ModelStore()
    return _DEFAULT_STORE.get(spec if spec is not None else ModelSpec.make(**spec_kw), device=device)


def model_info(spec: ModelSpec) -> dict | None:
    """Recorded facts (test accuracy, training time, ...) of a cached model."""
    return ModelStore().info(spec)
