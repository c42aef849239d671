"""Benchmarks of the attack engine (measured, never asserted in tests).

    python -m oodlib.bench overhead   [--batch 256] [--threads 2]   # attack iteration vs bare forward+backward
    python -m oodlib.bench art        [--batch 256] [--steps 100]   # against ART's FeatureAdversariesPyTorch
    python -m oodlib.bench quality    [--n 64] [--steps 10000]      # time to quality: authors' routine vs ours
    python -m oodlib.bench all

Per-iteration cost is the slope of wall time against the number of iterations (two run lengths), so set-up costs
(targets, random start, final evaluation) cancel out. The bare pass is a forward of the same model and batch
followed by the backward to the input only (the attack needs no parameter gradients); the same pass with
parameter gradients (a training step's backward) is reported too. Timings are medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

from .attack import frozen, ood_attack
from .metrics import mape
from .models import SmallCNN, TorchvisionResNet18


def machine() -> dict[str, str | int]:
    """What the numbers were measured on."""
    info: dict[str, str | int] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                  "torch": torch.__version__, "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_pass_seconds(f: Callable[[Tensor], Tensor], x: Tensor, target: Tensor, iterations: int, repeats: int,
                      parameter_grads: bool = False, module: nn.Module | None = None) -> float:
    """Seconds per forward + backward of ``||f(x) - target||²`` (to the input; also to the parameters if
    ``parameter_grads``), the reference an attack iteration is compared with."""

    def run() -> None:
        for _ in range(iterations):
            xr = x.detach().requires_grad_(True)
            loss = (f(xr) - target).pow(2).flatten(1).sum(1).sum()
            if parameter_grads:
                loss.backward()
            else:
                torch.autograd.grad(loss, xr)

    if module is not None and parameter_grads:
        module.zero_grad(set_to_none=True)
        return _timed(run, repeats) / iterations
    with frozen(module):
        run()  # warm-up
        return _timed(run, repeats) / iterations


def attack_iteration_seconds(f, x_in: Tensor, x_ood: Tensor, *, short: int, long: int, repeats: int, **kw) -> float:
    """Seconds per iteration of :func:`ood_attack`: the slope between runs of ``short`` and ``long`` iterations."""
    ood_attack(f, x_in, x_ood, steps=2, batch_size=len(x_in), **kw)  # warm-up
    t_short = _timed(lambda: ood_attack(f, x_in, x_ood, steps=short, batch_size=len(x_in), **kw), repeats)
    t_long = _timed(lambda: ood_attack(f, x_in, x_ood, steps=long, batch_size=len(x_in), **kw), repeats)
    return (t_long - t_short) / (long - short)


def overhead(model: nn.Module, batch: int, image: tuple[int, int, int], *, short: int = 10, long: int = 40,
             repeats: int = 3, eps: float = 5.0, seed: int = 0) -> dict[str, float]:
    """The attack's per-iteration cost relative to a bare forward+backward of the same model and batch."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    x_in = torch.rand(batch, *image, generator=gen).to(device)
    x_ood = torch.rand(batch, *image, generator=gen).to(device)
    with torch.no_grad():
        target = model.features(x_in)
    bare = bare_pass_seconds(model.features, x_ood, target, long - short, repeats, module=model)
    full = bare_pass_seconds(model.features, x_ood, target, long - short, repeats, parameter_grads=True,
                             module=model)
    attack = attack_iteration_seconds(model.features, x_in, x_ood, short=short, long=long, repeats=repeats, eps=eps,
                                      seed=seed)
    return {"bare_fwd_bwd_input_ms": 1e3 * bare, "fwd_bwd_with_param_grads_ms": 1e3 * full,
            "attack_iteration_ms": 1e3 * attack, "ratio_to_bare": attack / bare, "ratio_to_param_grads": attack / full}


def against_art(model: nn.Module, batch: int, *, steps: int = 100, eps_linf: float = 0.1, step_size: float = 0.01,
                repeats: int = 1, seed: int = 0) -> dict[str, float]:
    """ART's ``FeatureAdversariesPyTorch`` (Sabour et al. 2016; plain PGD with sign steps in an L∞ ball) against
    :func:`ood_attack` with ``norm="linf"`` on the same model, batch, ε, step size and iteration count: wall time
    and the final feature error of both (mean squared error and median MAPE of the matched code)."""
    from art.attacks.evasion import FeatureAdversariesPyTorch
    from art.estimators.classification import PyTorchClassifier

    gen = torch.Generator().manual_seed(seed)
    x_in = torch.rand(batch, 1, 28, 28, generator=gen)
    x_ood = torch.rand(batch, 1, 28, 28, generator=gen)
    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                   nb_classes=model.num_classes, clip_values=(0.0, 1.0), device_type="cpu")
    art_attack = FeatureAdversariesPyTorch(classifier, delta=eps_linf, layer="embed", max_iter=steps,
                                           batch_size=batch, step_size=step_size, random_start=True, verbose=False)
    x_art = None

    def run_art() -> None:
        nonlocal x_art
        torch.manual_seed(seed)
        x_art = torch.from_numpy(art_attack.generate(x_ood.numpy(), x_in.numpy()))

    ours = None

    def run_ours() -> None:
        nonlocal ours
        ours = ood_attack(model.features, x_in, x_ood, eps=eps_linf, steps=steps, norm="linf", update="printed",
                          step_size=step_size, seed=seed, batch_size=batch).x

    t_art, t_ours = _timed(run_art, repeats), _timed(run_ours, repeats)
    model.eval()
    with torch.no_grad():
        z_in = model.features(x_in)
        err = {name: model.features(x) for name, x in (("art", x_art), ("ours", ours))}
    result = {"art_seconds": t_art, "ours_seconds": t_ours, "speedup": t_art / t_ours}
    for name, z in err.items():
        result[f"{name}_feature_mse"] = float((z - z_in).pow(2).mean())
        result[f"{name}_median_mape"] = float(mape(z, z_in).median())
    result["art_max_linf"] = float((x_art - x_ood).abs().max())
    result["ours_max_linf"] = float((ours - x_ood).abs().max())
    return result


def time_to_quality(model: nn.Module, x_in: Tensor, x_ood: Tensor, *, eps: float, steps: int, seed: int = 0
                    ) -> dict[str, float]:
    """The authors' fixed-step routine run for ``steps`` iterations against the default routine: the iterations
    the default needs to reach the authors' final median MAPE, and where each ends."""
    start = time.perf_counter()
    authors = ood_attack(model.features, x_in, x_ood, eps=eps, steps=steps, routine="authors", seed=seed)
    t_authors = time.perf_counter() - start
    target = float(authors.mape.median())
    budget = max(steps // 10, 1)
    start = time.perf_counter()
    ours = ood_attack(model.features, x_in, x_ood, eps=eps, steps=budget, seed=seed)
    t_ours = time.perf_counter() - start
    curve = ours.mape_history.nanmedian(dim=1).values
    reached = (curve <= target).nonzero()
    first = int(ours.iterations[reached[0, 0]]) if len(reached) else None
    return {"authors_steps": steps, "authors_final_median_mape": target, "authors_seconds": t_authors,
            "default_steps": budget, "default_final_median_mape": float(ours.mape.median()),
            "default_seconds": t_ours, "default_iterations_to_authors_final": first,
            "default_steps_run": ours.steps_run}


def _small_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, image_size=28, num_classes=10).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oodlib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "art", "quality", "all"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--n", type=int, default=64, help="samples for the time-to-quality run")
    parser.add_argument("--trained", action="store_true", help="use the default profile's trained small CNN")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, object] = {"machine": machine()}
    model = _trained() if args.trained or args.what in ("quality",) else _small_cnn()
    if args.what in ("overhead", "all"):
        report["overhead_small_cnn_28"] = overhead(model, args.batch, (1, 28, 28))
        torch.manual_seed(0)
        resnet = TorchvisionResNet18(num_classes=10, in_channels=3, image_size=32).eval()
        report["overhead_resnet18_32"] = overhead(resnet, min(args.batch, 128), (3, 32, 32), short=3, long=8,
                                                  repeats=2)
    if args.what in ("art", "all"):
        report["art"] = against_art(model, args.batch, steps=args.steps or 100)
    if args.what in ("quality", "all"):
        from . import data

        trained = _trained()
        x_in = data.load_dataset("mnist5k", "test").subset(args.n, seed=0).x
        x_ood = data.start_batch("noise", args.n, size=28, channels=1, seed=0)
        report["time_to_quality"] = time_to_quality(trained, x_in, x_ood, eps=10.0, steps=args.steps or 10_000)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _trained() -> SmallCNN:
    from .store import ModelSpec, get_model

    return get_model(ModelSpec.make("small_cnn", "mnist5k", epochs=6, seed=0), device="cpu")


if __name__ == "__main__":
    raise SystemExit(main())
