"""Reliability: missing data refused before any work, an interrupted build resumes correctly, and two cold
builds of the smoke profile give bitwise-identical results files."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from oodlib import params, runner

QUICK = textwrap.dedent('''\
    # %% tags=["parameters"]
    profile: str = "default"  # one of profiles; set by --profile
    dataset: str = "mnist5k"  # one of datasets; data
    # %%
    from oodlib.report import Results
    r = Results(); r.add("quick", "one", 1.0); r.save()
    ''')
SLOW = QUICK.replace('r = Results()', 'import time; time.sleep(60); r = Results()')


def _setup(tmp_path: Path, monkeypatch, notebooks: dict[str, str], profile_values=None) -> list[Path]:
    paths = []
    for stem, source in notebooks.items():
        path = tmp_path / "nb" / f"{stem}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(source)
        paths.append(path)
    pdir = tmp_path / "params"
    pdir.mkdir()
    for profile in params.PROFILES:
        (pdir / f"{profile}.yml").write_text(yaml.safe_dump({"notebooks": profile_values or {}}))
    monkeypatch.setattr(params, "PARAMS_DIR", pdir)
    for name in ("BUILD", "RESULTS", "RUNS"):
        monkeypatch.setattr(runner, name, tmp_path / name.lower())
    monkeypatch.setattr(runner, "book_notebooks", lambda toc=None: paths)
    return paths


def test_missing_real_dataset_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("OODLIB_DATA", str(tmp_path / "no-data"))
    _setup(tmp_path, monkeypatch, {"quick": QUICK}, {"quick": {"dataset": "cifar10"}})
    with pytest.raises(runner.MissingDataError, match=r"cifar10 \(needed by quick\): python data_scripts/fetch.py"):
        runner.execute_book("paper")
    assert not runner.RESULTS.exists() and not runner.BUILD.exists()


def test_killed_build_resumes_and_reexecutes_only_what_was_interrupted(tmp_path, monkeypatch):
    paths = _setup(tmp_path, monkeypatch, {"a_quick": QUICK, "b_slow": SLOW})
    script = textwrap.dedent(f'''
        from pathlib import Path
        from oodlib import params, runner
        params.PARAMS_DIR = Path({str(params.PARAMS_DIR)!r})
        runner.BUILD, runner.RESULTS = Path({str(runner.BUILD)!r}), Path({str(runner.RESULTS)!r})
        runner.book_notebooks = lambda toc=None: [Path(p) for p in {[str(p) for p in paths]!r}]
        runner.execute_book("smoke", jobs=1)
        ''')
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    quick_done = runner.RESULTS / "smoke" / "a_quick.json"
    deadline = time.time() + 240
    while not quick_done.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert quick_done.exists(), "the first chapter never finished"
    time.sleep(8)  # the slow chapter's kernel is now mid-execution
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (runner.RESULTS / "smoke" / "b_slow.json").exists()  # no half-written result
    monkeypatch.setattr(runner, "book_notebooks", lambda toc=None: [paths[0]])  # resume, without waiting 60 s
    statuses = {o.notebook: o.status for o in runner.execute_book("smoke", log=lambda m: None)}
    assert statuses == {"a_quick": "cached"}
    leftovers = [p for p in runner.RESULTS.rglob("*") if p.name.startswith(".")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.notebook
def test_two_cold_builds_of_the_smoke_profile_give_identical_results_files(smoke_book, tmp_path, monkeypatch):
    """Every chapter executed again from cold — an empty model cache, no executed notebooks, no results — gives
    results files bitwise identical to the session's smoke build (itself cold on a fresh clone, as in CI)."""
    assert all(o.status in ("executed", "cached") for o in smoke_book.values())
    monkeypatch.setenv("OODLIB_CACHE", str(tmp_path / "cache"))
    for name in ("BUILD", "RESULTS"):
        monkeypatch.setattr(runner, name, tmp_path / name.lower())
    outcomes = runner.execute_book("smoke", jobs=2, log=lambda message: print(message, flush=True))
    assert [o.status for o in outcomes] == ["executed"] * len(outcomes), [o.error for o in outcomes]
    assert list((tmp_path / "cache" / "models").iterdir()), "the second build trained its own models"
    differ = [o.notebook for o in outcomes if o.results.read_bytes() != smoke_book[o.notebook].results.read_bytes()]
    assert not differ, f"results files differ between two cold builds: {differ}"
