"""The model store: a chapter asks for a trained module by its spec; the store returns the cached one or trains it.

One cached-artifact protocol serves every kind of trained module — classifiers (:class:`ModelSpec`), the
auto-encoder of Section 2.4 (:class:`~oodlib.autoencoder.AutoEncoderSpec`) and the Glow flows of Section 3.2
(:class:`~oodlib.flows.FlowSpec`): **spec → key → stem → train → get → info**. An :class:`Artifact` says, for one
kind of spec, which source files determine the trained module, how to build an untrained one and how to train it;
:data:`ARTIFACTS` maps each spec type to its artifact, and everything else is shared:

- :func:`cache_key` covers everything that determines the module: the spec, the source of the code that trains
  it (:attr:`Artifact.code`), the dataset's fingerprint, the torch version (and the artifact's other versions,
  e.g. ``normflows``); :func:`stem` is ``<spec.label>-<key>``.
- Writes are atomic (temporary file + ``os.replace``), and a per-key file lock makes two processes that ask for
  the same module at once train it once.
- Loads use ``torch.load(..., weights_only=True)`` after checking the file's SHA-256 against its metadata; a
  corrupt or truncated checkpoint is never loaded: it is rebuilt.

The store imports :mod:`oodlib.recipes`, the one module that registers every training recipe. Modules live in
``$OODLIB_CACHE/<folder>`` (default ``<repo>/.cache/models``, ``autoencoders``, ``flows``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import io
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import torch
from torch import nn

from . import data, losses, models, recipes, samplers, training, utils
from . import autoencoder as autoencoder_module
from . import flows as flows_module
from .autoencoder import AutoEncoderSpec, ConvAutoEncoder
from .flows import FlowSpec, Glow
from .training import ModelSpec, build_untrained, input_geometry, training_data

__all__ = ["ARTIFACTS", "Artifact", "CACHE_ENV", "ModelSpec", "ModelStore", "atomic_write_bytes", "autoencoder_info",
           "build_untrained", "cache_dir", "cache_key", "cached_module", "cached_paths", "file_lock", "flow_info",
           "get", "get_autoencoder", "get_flow", "get_model", "info", "input_geometry", "load_checked",
           "model_info", "save_checked", "stem", "training_data"]

CACHE_ENV = "OODLIB_CACHE"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_PACKAGE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """``$OODLIB_CACHE`` if set, else ``<repo>/.cache``."""
    return Path(os.environ.get(CACHE_ENV, _REPO_ROOT / ".cache"))


# ------------------------------------------------------------------------------------- the artifact protocol


@dataclass(frozen=True)
class Artifact:
    """One kind of trained module the store caches.

    Attributes
    ----------
    folder : sub-folder of :func:`cache_dir` that holds this kind.
    kind : its name in messages ("model", "auto-encoder", "flow").
    code : ``code(spec)`` → the source files whose code determines the trained module (hashed into the key).
    build : ``build(spec, meta)`` → the untrained module, sized from the stored metadata ``meta``.
    train : ``train(spec, device, store)`` → ``(trained module, facts to store)``; ``store`` is the
        :class:`ModelStore` asking, for a module that starts from another stored one (a warm start).
    versions : ``versions()`` → other versions the key covers (``{"normflows": "3.2"}``).
    read_back : return the stored copy of a freshly trained module, so a fresh and a cached one take one path.
    """

    folder: str
    kind: str
    code: Callable[[Any], set[Path]]
    build: Callable[[Any, dict], nn.Module]
    train: Callable[[Any, torch.device, "ModelStore"], tuple[nn.Module, dict]]
    versions: Callable[[], dict] = dict
    read_back: bool = False


def _files(*modules: ModuleType) -> set[Path]:
    return {Path(m.__file__) for m in modules}


def _training_code(*modules: ModuleType) -> set[Path]:
    """The modules every trained module depends on (data, training loop, losses, samplers, utilities) and
    ``modules``."""
    return _files(data, training, losses, samplers, utils, *modules)


def _classifier_code(spec: ModelSpec) -> set[Path]:
    """The models, the training layer, the attack package (adversarial recipes use it), the recipe's own module
    and :mod:`oodlib.recipes.common` (a recipe module imports no other sibling; tests/test_layers.py checks it)."""
    files = _training_code(models, recipes.common) | set((_PACKAGE / "attack").glob("*.py"))
    recipe_module = inspect.getmodule(training.RECIPES[spec.recipe])
    if recipe_module is not None and getattr(recipe_module, "__file__", None):
        files.add(Path(recipe_module.__file__))
    return files


def _train_classifier(spec: ModelSpec, device: torch.device, store: "ModelStore") -> tuple[nn.Module, dict]:
    """:func:`oodlib.training.train_classifier`, from the weights of the warm start's classifier (taken from the
    same store) when the recipe has one (:func:`oodlib.training.warm_start_spec`)."""
    base = training.warm_start_spec(spec)
    initial_state = store.get(base, device=device).state_dict() if base is not None else None
    return training.train_classifier(spec, device, initial_state)


CLASSIFIERS = Artifact("models", "model", _classifier_code,
                       build=lambda spec, meta: build_untrained(spec, meta["geometry"]), train=_train_classifier)
AUTOENCODERS = Artifact("autoencoders", "auto-encoder",
                        lambda spec: _training_code(autoencoder_module, recipes.autoencoder),
                        build=lambda spec, meta: spec.build(meta["in_channels"], meta["image_size"]),
                        train=lambda spec, device, store: recipes.autoencoder.train(spec, device))
FLOWS = Artifact("flows", "flow", lambda spec: _training_code(flows_module, recipes.flow),
                 build=lambda spec, meta: spec.build(),
                 train=lambda spec, device, store: recipes.flow.train(spec, device),
                 versions=lambda: {"normflows": metadata.version("normflows")}, read_back=True)

ARTIFACTS: dict[type, Artifact] = {ModelSpec: CLASSIFIERS, AutoEncoderSpec: AUTOENCODERS, FlowSpec: FLOWS}
"""The artifact of each spec type."""


def artifact(spec: Any) -> Artifact:
    """The :class:`Artifact` of ``spec``'s type; ``TypeError`` for a type the store does not cache."""
    if type(spec) not in ARTIFACTS:
        raise TypeError(f"the store caches {', '.join(t.__name__ for t in ARTIFACTS)}, not {type(spec).__name__}")
    return ARTIFACTS[type(spec)]


def _source_hash(files: set[Path]) -> str:
    """SHA-256 over the names and contents of ``files``, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(spec: Any) -> str:
    """The store key (20 hex digits): a hash of the spec, the code that trains it, the data's fingerprint, the
    torch version and the artifact's other versions."""
    kind = artifact(spec)
    payload = {"spec": asdict(spec), "code": _source_hash(kind.code(spec)), "data": data.fingerprint(spec.dataset),
               "torch": torch.__version__.split("+")[0], **kind.versions()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def stem(spec: Any) -> str:
    """The cached files' name without suffix: ``<spec.label>-<cache_key(spec)>``."""
    return f"{spec.label}-{cache_key(spec)}"


# -------------------------------------------------------------------------------------------- files on disk


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so a reader sees the old file or the whole new one, never a part. The file
    gets the permissions of any file the user creates (0666 less the umask, not the temporary file's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


def cached_paths(root: Path, name: str) -> tuple[Path, Path, Path]:
    """Where a cached module lives: ``<root>/<name>.pt`` (state dict), ``<name>.json`` (facts and the weights'
    SHA-256) and the lock file ``.<name>.lock``."""
    return root / f"{name}.pt", root / f"{name}.json", root / f".{name}.lock"


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
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(weights, payload)
    meta = {**meta, "sha256": hashlib.sha256(payload).hexdigest()}
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())


def cached_module(root: Path, name: str, build: Callable[[dict], nn.Module],
                  train: Callable[[], tuple[nn.Module, dict]], kind: str = "model", read_back: bool = False
                  ) -> nn.Module:
    """Under a file lock, load the module ``name`` from ``root`` when cached and intact (:func:`load_checked`),
    else ``train()`` → ``(module, meta)`` and store both (:func:`save_checked`), so concurrent callers train once.
    ``read_back`` returns the stored copy instead of the trained object. Raises ``RuntimeError`` when a module
    just stored cannot be read back."""
    weights, meta_path, lock = cached_paths(root, name)
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


# ---------------------------------------------------------------------------------------------- the store


class ModelStore:
    """Cached trained modules in the folder ``root`` (default: the spec kind's folder of :func:`cache_dir`),
    keyed by :func:`cache_key`; serves every spec type of :data:`ARTIFACTS`."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self._root = Path(root) if root is not None else None

    def folder(self, spec: Any) -> Path:
        """Where ``spec``'s module is cached."""
        return self._root if self._root is not None else cache_dir() / artifact(spec).folder

    @property
    def root(self) -> Path:
        """The classifiers' folder (``root`` as given, or ``<cache>/models``)."""
        return self._root if self._root is not None else cache_dir() / CLASSIFIERS.folder

    def paths(self, spec: Any) -> tuple[Path, Path, Path]:
        """Weights, metadata and lock file of ``spec``'s module (:func:`cached_paths`)."""
        return cached_paths(self.folder(spec), stem(spec))

    def info(self, spec: Any) -> dict | None:
        """The metadata recorded when the module was trained, or None if it is not cached."""
        _, meta_path, _ = self.paths(spec)
        return json.loads(meta_path.read_text()) if meta_path.exists() else None

    def get(self, spec: Any, device: str | torch.device = "auto") -> nn.Module:
        """The trained module for ``spec`` in eval mode on ``device``: loaded if cached and intact, else trained
        (once, even when several processes ask at the same time) and stored. Raises ``ValueError`` for an
        invalid spec, ``TypeError`` for a spec type the store does not cache."""
        kind = artifact(spec)
        spec.validate()
        dev = models.resolve_device(device)

        def train() -> tuple[nn.Module, dict]:
            module, facts = kind.train(spec, dev, self)
            return module, {"spec": asdict(spec), "key": cache_key(spec), **facts}

        module = cached_module(self.folder(spec), stem(spec), lambda meta: kind.build(spec, meta), train,
                               kind=kind.kind, read_back=kind.read_back)
        return module.to(dev).eval()

    def _load(self, spec: Any, weights: Path, meta_path: Path) -> nn.Module | None:
        kind = artifact(spec)
        return load_checked(weights, meta_path, lambda meta: kind.build(spec, meta), kind.kind)


def get(spec: Any, device: str | torch.device = "auto") -> nn.Module:
    """The trained module for any spec of :data:`ARTIFACTS` from the default store (:meth:`ModelStore.get`)."""
    return ModelStore().get(spec, device=device)


def info(spec: Any) -> dict | None:
    """Recorded facts (test accuracy or error, training time, ...) of a cached module, or None."""
    return ModelStore().info(spec)


def get_model(spec: ModelSpec | None = None, device: str | torch.device = "auto", **spec_kw: Any
              ) -> models.Classifier:
    """The trained classifier for ``spec`` (or ``ModelSpec.make(**spec_kw)``) from the default store."""
    return get(spec if spec is not None else ModelSpec.make(**spec_kw), device)


def get_autoencoder(spec: AutoEncoderSpec | None = None, device: str | torch.device = "auto", **spec_kw: Any
                    ) -> ConvAutoEncoder:
    """The trained auto-encoder of Section 2.4 for ``spec`` (or ``AutoEncoderSpec(**spec_kw)``)."""
    return get(spec if spec is not None else AutoEncoderSpec(**spec_kw), device)


def get_flow(spec: FlowSpec | None = None, device: str | torch.device = "auto", **spec_kw: Any) -> Glow:
    """The trained Glow flow of Section 3.2 for ``spec`` (or ``FlowSpec.make(**spec_kw)``)."""
    return get(spec if spec is not None else FlowSpec.make(**spec_kw), device)


model_info = autoencoder_info = flow_info = info
"""Recorded facts of a cached classifier, auto-encoder or flow (:func:`info`)."""
