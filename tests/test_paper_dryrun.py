"""Paper-profile dry run: every chapter of the book executes with ``--profile paper`` on synthetic stand-ins.

``data_scripts/synthetic.py`` writes tiny random data sets in the real fetchers' on-disk formats and random-weight
checkpoints into a temporary ``$OODLIB_DATA``; each chapter then runs through the runner's command line
(``python -m oodlib run NOTEBOOK --profile paper -p NAME VALUE ...``, two chapters at a time, one thread per
kernel) with only the sizes in ``tests/paper_dryrun.yml`` changed. The paper's architectures, image sizes, datasets
and code paths are exercised; its numbers are not (the data are random). Model cache, results and runs go to a
temporary folder: nothing in the repository's ``.cache``, ``results``, ``runs`` or ``_build`` is touched.

    python -m pytest -m paper_dryrun -q       # by hand
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from oodlib import runner

REPO = Path(__file__).resolve().parent.parent
OVERRIDES_FILE = Path(__file__).with_name("paper_dryrun.yml")
OVERRIDES: dict[str, dict] = yaml.safe_load(OVERRIDES_FILE.read_text())
NOTEBOOKS = runner.book_notebooks()
JOBS = 2

SIZE_NAME = re.compile(r"^(n_[a-z_]+|([a-z_]+_)?epochs|([a-z_]+_)?steps|steps_[a-z]+|([a-z_]+_)?iterations"
                       r"|warmup_iters|([a-z_]+_)?batch_size)$")
"""Names of sizes: sample counts, epochs, step and iteration counts, batch sizes."""
NOT_SIZES = ("n_components", "n_members")
"""Size-like names that shape a model (mixture components, ensemble members): never overridden."""

HEAVY = ("section3_2_glow", "appendix_i_input_complexity")
"""The paper's Glow (4 levels x 32 steps, 512 channels, 64 x 64) needs ~5 GB on the CPU: one such chapter at a time."""
_HEAVY_LOCK = threading.Lock()

# The runner's command line in a fresh interpreter, with the runs/ and results/ folders moved to temporary ones.
_RUN = ("import sys, pathlib; from oodlib import runner; runner.RUNS = pathlib.Path(sys.argv[1]); "
        "runner.RESULTS = pathlib.Path(sys.argv[2]); from oodlib.__main__ import main; sys.exit(main(sys.argv[3:]))")


def _command(notebook: Path, runs: Path, results: Path) -> list[str]:
    command = [sys.executable, "-c", _RUN, str(runs), str(results), "run", str(notebook), "--profile", "paper",
               "--threads", "1", "--no-html"]  # executing is what is tested; no page per chapter
    for name, value in (OVERRIDES.get(notebook.stem) or {}).items():
        command += ["-p", name, yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()]
    return command


def _run_chapter(notebook: Path, tmp: Path, env: dict[str, str]) -> dict:
    start = time.perf_counter()
    with _HEAVY_LOCK if notebook.stem in HEAVY else contextlib.nullcontext():
        proc = subprocess.run(_command(notebook, tmp / "runs", tmp / "results"), cwd=REPO, env=env,
                              capture_output=True, text=True)
    seconds = time.perf_counter() - start
    record = None
    found = sorted((tmp / "runs").glob(f"{notebook.stem}-paper-*/results.json"), key=lambda p: p.stat().st_mtime)
    for results in found[-1:]:
        record = json.loads(results.read_text())
        target = tmp / "results" / "paper" / f"{notebook.stem}.json"  # where the book build keeps it
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(results, target)
    print(f"  {'ok' if proc.returncode == 0 else 'FAILED'}  {notebook.stem} ({seconds:.0f} s)", flush=True)
    return {"rc": proc.returncode, "output": (proc.stdout + proc.stderr)[-6000:], "seconds": seconds,
            "record": record}


@pytest.fixture(scope="session")
def dryrun(tmp_path_factory) -> dict[str, dict]:
    """Write the stand-ins, then execute every chapter (the final ones last); outcome per chapter name."""
    tmp = tmp_path_factory.mktemp("paper_dryrun")
    writer = subprocess.run([sys.executable, str(REPO / "data_scripts" / "synthetic.py"), "--root",
                             str(tmp / "data")], cwd=REPO, capture_output=True, text=True)
    assert writer.returncode == 0, writer.stdout + writer.stderr
    env = {**os.environ, "OODLIB_DATA": str(tmp / "data"), "OODLIB_STANDINS": "1", "OODLIB_CACHE": str(tmp / "cache"),
           "OODLIB_RESULTS": str(tmp / "results")}
    regular = [nb for nb in NOTEBOOKS if nb.stem not in runner.FINAL_NOTEBOOKS]
    regular.sort(key=lambda nb: (nb.stem != HEAVY[0], nb.stem == HEAVY[1]))  # longest first, the other one last
    final = [nb for nb in NOTEBOOKS if nb.stem in runner.FINAL_NOTEBOOKS]
    outcomes: dict[str, dict] = {}
    start = time.perf_counter()
    for group in (regular, final):
        with cf.ThreadPoolExecutor(max_workers=JOBS) as pool:
            futures = {pool.submit(_run_chapter, nb, tmp, env): nb.stem for nb in group}
            for future in cf.as_completed(futures):
                outcomes[futures[future]] = future.result()
    print(f"paper dry run: {len(outcomes)} chapters in {time.perf_counter() - start:.0f} s", flush=True)
    return outcomes


@pytest.mark.paper_dryrun
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_executes_with_the_paper_profile_on_standins(dryrun, notebook):
    outcome = dryrun[notebook.stem]
    assert outcome["rc"] == 0, f"{notebook.name} failed with the paper profile:\n{outcome['output']}"
    record = outcome["record"]
    assert record["profile"] == "paper" and record["parameters"]["profile"] == "paper"
    overrides = OVERRIDES.get(notebook.stem) or {}
    profile = yaml.safe_load((REPO / "notebooks" / "params" / "paper.yml").read_text())
    expected = {**(profile.get("common") or {}), **((profile.get("notebooks") or {}).get(notebook.stem) or {}),
                **overrides}
    used = record["parameters"]
    assert {k: used[k] for k in expected if k in used} == {k: v for k, v in expected.items() if k in used}, \
        "the chapter ran with other values than the paper profile plus the listed sizes"
    assert set(overrides) <= set(used)


def test_overrides_are_sizes_only():
    stems = {nb.stem for nb in NOTEBOOKS}
    for stem, overrides in OVERRIDES.items():
        assert stem in stems, f"{OVERRIDES_FILE.name}: {stem} is not a chapter of the book"
        for name, value in (overrides or {}).items():
            assert SIZE_NAME.match(name) and name not in NOT_SIZES, \
                f"{OVERRIDES_FILE.name}: {stem}.{name} is not a size; only sizes may be overridden"
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 1, \
                f"{OVERRIDES_FILE.name}: {stem}.{name} must be a positive integer; got {value!r}"


@pytest.mark.parametrize("name", ["n_samples", "epochs", "oct_epochs", "steps", "steps_long", "sweep_steps",
                                  "em_iterations", "warmup_iters", "jem_batch_size", "flow_batch_size"])
def test_size_names_are_allowed(name):
    assert SIZE_NAME.match(name) and name not in NOT_SIZES


@pytest.mark.parametrize("name", ["arch", "archs", "image_size", "dataset", "flow_levels", "flow_depth",
                                  "flow_hidden", "latent_dim", "model_options", "recipe", "start", "eps",
                                  "n_components", "n_members", "schedule", "member_recipe", "gan_width"])
def test_architecture_and_path_names_are_refused(name):
    assert not (SIZE_NAME.match(name) and name not in NOT_SIZES)
