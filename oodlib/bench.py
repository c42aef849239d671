"""Benchmarks of the attack engine (measured, never asserted in tests).

    python -m oodlib.bench overhead   [--batch 256] [--threads 2]   # attack iteration vs bare forward+backward
    python -m oodlib.bench art        [--batch 256] [--steps 100]   # against ART's FeatureAdversariesPyTorch
    python -m oodlib.bench quality    [--n 64] [--steps 10000]      # time to quality: authors' routine vs ours
    python -m oodlib.bench gpu        [--batch 128]                 # ResNet-18/DenseNet-121 at 224²: iterations/s
    python -m oodlib.bench all                                      # overhead, art, quality

Per-iteration cost is the slope of wall time against the number of iterations (two run lengths), so set-up costs
(targets, random start, final evaluation) cancel out. The bare pass is a forward of the same model and batch
followed by the backward to the input only (the attack needs no parameter gradients); the same pass with
parameter gradients (a training step's backward) is reported too. Timings are medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

from .attack import frozen, ood_attack
from .metrics import mape
from .models import SmallCNN, SmallResNet, TorchvisionDenseNet121, TorchvisionResNet18


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
    """Median wall seconds of ``repeats`` calls of ``fn``."""
    return statistics.median(_wall(fn) for _ in range(repeats))


def _wall(fn: Callable[[], object]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _per_iteration(attack: Callable[[int], None], short: int, long: int) -> float:
    """Seconds per iteration: the slope between runs of ``short`` and ``long`` iterations (set-up, targets and
    the final evaluation cancel)."""
    return (_wall(lambda: attack(long)) - _wall(lambda: attack(short))) / (long - short)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_pass(f: Callable[[Tensor], Tensor], x: Tensor, target: Tensor, iterations: int,
              parameter_grads: bool = False) -> Callable[[], None]:
    """``iterations`` forward + backward passes of ``||f(x) - target||²`` (to the input; also to the parameters
    if ``parameter_grads``): the reference an attack iteration is compared with."""

    def run() -> None:
        for _ in range(iterations):
            xr = x.detach().requires_grad_(True)
            loss = (f(xr) - target).pow(2).flatten(1).sum(1).sum()
            if parameter_grads:
                loss.backward()
            else:
                torch.autograd.grad(loss, xr)

    return run


def overhead(model: nn.Module, batch: int, image: tuple[int, int, int], *, short: int = 10, long: int = 40,
             repeats: int = 9, eps: float = 5.0, seed: int = 0, device: str = "cpu",
             routines: tuple[str, ...] = ("authors", "fast")) -> dict[str, float]:
    """The attack's per-iteration cost relative to a bare forward+backward of the same model and batch.

    An attack iteration costs the slope between runs of ``short`` and ``long`` iterations (set-up and final
    evaluation cancel). Each repeat times the bare pass and every routine back to back, so slow phases of a
    shared machine hit all of them alike; the ratio reported is the median of the per-repeat ratios (and the
    ratio of the fastest repeats, ``*_best``)."""
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed)
    x_in = torch.rand(batch, *image, generator=gen).to(device)
    x_ood = torch.rand(batch, *image, generator=gen).to(device)
    with torch.no_grad():
        target = model.features(x_in)
    k = long - short
    times: dict[str, list[float]] = {"bare": [], "param_grads": [], **{r: [] for r in routines}}

    def attack(routine: str, steps: int) -> None:
        ood_attack(model.features, x_in, x_ood, eps=eps, steps=steps, batch_size=batch, routine=routine, seed=seed)

    for r in routines:
        attack(r, 2)  # warm-up
    for _ in range(repeats):
        with frozen(model):
            times["bare"].append(_wall(bare_pass(model.features, x_ood, target, k)) / k)
        model.zero_grad(set_to_none=True)
        times["param_grads"].append(_wall(bare_pass(model.features, x_ood, target, k, parameter_grads=True)) / k)
        model.zero_grad(set_to_none=True)
        for r in routines:
            times[r].append(_per_iteration(lambda steps: attack(r, steps), short, long))
    result = {"batch": batch, "iterations": k, "repeats": repeats,
              "bare_fwd_bwd_input_ms": 1e3 * statistics.median(times["bare"]),
              "fwd_bwd_with_param_grads_ms": 1e3 * statistics.median(times["param_grads"])}
    for r in routines:
        ratios = [a / b for a, b in zip(times[r], times["bare"])]
        result[f"{r}_iteration_ms"] = 1e3 * statistics.median(times[r])
        result[f"{r}_ratio_to_bare"] = statistics.median(ratios)
        result[f"{r}_ratio_to_bare_best"] = min(times[r]) / min(times["bare"])
        result[f"{r}_ratio_to_param_grads"] = statistics.median(a / b for a, b in zip(times[r], times["param_grads"]))
    return result


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


VARIANTS = {"fp32": {}, "autocast": {"autocast": True}, "channels_last": {"channels_last": True},
            "autocast+channels_last": {"autocast": True, "channels_last": True}}


def iterations_per_second(model: nn.Module, batch: int, image: tuple[int, int, int], *, short: int = 5,
                          long: int = 25, repeats: int = 3, device: str = "cuda", seed: int = 0,
                          variants: dict[str, dict] = VARIANTS) -> dict[str, dict[str, float | int | None]]:
    """Attack iterations per second of ``model`` (the paper's Section 3.1 setting: ResNet-18 at 224×224, batch
    128) in each precision/layout variant, with the host↔device copies counted over the ``long − short``
    iterations between two runs (the attack loop should make none)."""
    gen = torch.Generator().manual_seed(seed)
    x_in = torch.rand(batch, *image, generator=gen).to(device)
    x_ood = torch.rand(batch, *image, generator=gen).to(device)
    report: dict[str, dict[str, float | int | None]] = {}
    for name, options in variants.items():
        layout = torch.channels_last if options.get("channels_last") else torch.contiguous_format
        model.to(device=device, memory_format=layout)

        def attack(steps: int) -> None:
            ood_attack(model.features, x_in, x_ood, eps=5.0, steps=steps, batch_size=batch, routine="authors",
                       seed=seed, **options)

        attack(2)  # warm-up (cuDNN autotuning, allocator)
        seconds = [_per_iteration(attack, short, long) for _ in range(repeats)]
        per_iteration = statistics.median(seconds)
        rate = 1 / per_iteration if per_iteration > 0 else math.nan  # slope lost in timer noise: no rate
        report[name] = {"iteration_ms": 1e3 * per_iteration, "iterations_per_s": rate,
                        "copies_per_iteration": _copies_per_iteration(attack, short, long)}
    model.to(memory_format=torch.contiguous_format)
    return report


def _copies_per_iteration(attack: Callable[[int], None], short: int, long: int) -> float | None:
    """Host↔device memory copies (CUDA ``Memcpy`` events) per attack iteration; None without a GPU."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    counts = []
    for steps in (short, long):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            attack(steps)
        counts.append(sum(e.count for e in prof.key_averages() if "Memcpy" in e.key and "DtoD" not in e.key))
    return (counts[1] - counts[0]) / (long - short)


def section_3_1_hours(its_per_s: dict[str, float], n_samples: int = 1000, steps: int = 10_000, starts: int = 2,
                      batch: int = 128) -> dict[str, float]:
    """Hours the paper profile's Section 3.1 spends attacking, per encoder: ``starts`` start images ×
    ⌈n_samples / batch⌉ batches × ``steps`` iterations at the measured iterations/s."""
    batches = -(-n_samples // batch)
    return {arch: starts * batches * steps / rate / 3600 for arch, rate in its_per_s.items()}


def gpu(batch: int = 128, image_size: int = 224, device: str = "cuda") -> dict[str, object]:
    """The Section 3.1 setting on a GPU: both encoders, every variant, and the paper profile's attack time."""
    report: dict[str, object] = {}
    rates = {}
    for arch, make in (("resnet18", TorchvisionResNet18), ("densenet121", TorchvisionDenseNet121)):
        torch.manual_seed(0)
        model = make(num_classes=1000, in_channels=3, image_size=image_size).eval()
        report[arch] = iterations_per_second(model, batch, (3, image_size, image_size), device=device)
        rates[arch] = report[arch]["fp32"]["iterations_per_s"]
    report["paper_section_3_1_hours_fp32"] = section_3_1_hours(rates, batch=batch)
    return report


def _small_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, image_size=28, num_classes=10).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oodlib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "art", "quality", "gpu", "all"])
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 256; gpu: 128)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--n", type=int, default=64, help="samples for the time-to-quality run")
    parser.add_argument("--trained", action="store_true", help="use the default profile's trained small CNN")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.what == "gpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: the gpu benchmark needs one")
    torch.set_num_threads(args.threads)
    batch = args.batch or (128 if args.what == "gpu" else 256)
    report: dict[str, object] = {"machine": machine()}
    model = _trained() if args.trained else _small_cnn()
    if args.what in ("overhead", "all"):
        report["overhead_small_cnn_28"] = overhead(model, batch, (1, 28, 28), repeats=args.repeats)
        torch.manual_seed(0)
        small_resnet = SmallResNet(in_channels=1, image_size=28, num_classes=10).eval()
        report["overhead_small_resnet_28"] = overhead(small_resnet, batch, (1, 28, 28), short=5, long=20,
                                                      repeats=args.repeats)
        torch.manual_seed(0)
        resnet = TorchvisionResNet18(num_classes=10, in_channels=3, image_size=32).eval()
        report["overhead_resnet18_32"] = overhead(resnet, min(batch, 128), (3, 32, 32), short=4, long=16,
                                                  repeats=args.repeats)
    if args.what in ("art", "all"):
        report["art"] = against_art(model, batch, steps=args.steps or 100)
    if args.what in ("quality", "all"):
        from . import data

        x_in = data.load_dataset("mnist5k", "test").subset(args.n, seed=0).x
        x_ood = data.start_batch("noise", args.n, size=28, channels=1, seed=0)
        report["time_to_quality"] = time_to_quality(_trained(), x_in, x_ood, eps=10.0, steps=args.steps or 10_000)
    if args.what == "gpu":
        report["gpu"] = gpu(batch=batch)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _trained() -> SmallCNN:
    from .store import ModelSpec, get_model

    return get_model(ModelSpec.make("small_cnn", "mnist5k", epochs=6, seed=0), device="cpu")


if __name__ == "__main__":
    raise SystemExit(main())
