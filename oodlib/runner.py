"""The notebook runner: profile + notebook → executed notebook + results file → Jupyter Book.

- Parameters are validated (:mod:`oodlib.params`) for every notebook before any work starts.
- A notebook is executed with papermill in its own folder, in a worker process with a fixed number of threads
  (so results are bitwise reproducible on the CPU whatever the number of parallel jobs).
- A notebook is skipped only when nothing it depends on changed since its last successful run: its source, its
  parameters, the oodlib source, the data it reads (fingerprints of the datasets its parameters name) and the
  versions of the packages that compute. Jupyter Book's own cache ignores library changes; this one does not.
- Outputs are written atomically and only on success: a failed run keeps the last good executed notebook and
  results in place, is recorded as failed (so it re-runs next time), saves the failed notebook under
  ``_build/failed/`` and fails the build with its traceback printed.
- The book is staged from the executed notebooks (never re-executed by Jupyter Book) and built with warnings as
  errors.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .params import REPO_ROOT, effective_parameters
from .terminal import PROGRESS_ENV

BUILD = REPO_ROOT / "_build"
RESULTS = REPO_ROOT / "results"
RUNS = REPO_ROOT / "runs"
ROWS_ENV = "OODLIB_ROWS"
PROFILE_ENV = "OODLIB_PROFILE"
RESULTS_ENV = "OODLIB_RESULTS"  # the results folder a chapter reads other chapters' results from
# glibc's allocator: keep freed blocks of up to 32 MiB (activations, gradients) in the heap instead of returning
# them to the kernel after every pass; re-faulting fresh pages made each forward+backward ≈20% slower.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
FINAL_NOTEBOOKS = ("reproduction_scorecard",)  # read every other chapter's results, so they run last
EXTRA_INPUTS = {  # files a notebook reads besides oodlib and its data
    "reproduction_scorecard": ("results/{profile}/*.json",),
    "appendix_a_parameters": ("notebooks/params/*.yml", "notebooks/*.py", "_toc.yml"),
}
# oodlib modules no notebook imports: not inputs
RUNNER_ONLY = ("runner.py", "__main__.py", "bench.py", "bench_threads.py")
# The thread policy of `oodlib run` and `oodlib book` alike: one CPU thread per chapter kernel (the book runs
# --jobs chapters side by side). Results are bitwise those of the book, and an oversubscribed machine does not
# slow down tenfold (README, "Threads").
DEFAULT_THREADS = 1
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image", "mlxtend", "pydicom")


def book_notebooks(toc: Path = REPO_ROOT / "_toc.yml") -> list[Path]:
    """The notebooks of the book, in table-of-contents order, with the final (summary) ones last."""
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(toc.read_text()))
    paths = [REPO_ROOT / f"{f}.py" for f in files if f.startswith("notebooks/")]
    return sorted(paths, key=lambda p: p.stem in FINAL_NOTEBOOKS)


def _hash_files(h: "hashlib._Hash", paths: list[Path], root: Path = REPO_ROOT) -> None:
    for path in sorted(paths):
        h.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        h.update(path.read_bytes())


def library_files() -> list[Path]:
    """The oodlib modules a notebook can import (all but the runner's own) and the data files they read (the
    paper's reference values, ``*.csv``)."""
    return sorted(p for pattern in ("*.py", "*.csv") for p in (REPO_ROOT / "oodlib").rglob(pattern)
                  if p.name not in RUNNER_ONLY)


def input_hash(notebook: Path, params: dict[str, Any], profile: str) -> str:
    """Hash of everything the notebook's outputs depend on (see module docstring)."""
    from . import data

    h = hashlib.sha256()
    _hash_files(h, [notebook, *library_files()])
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for pattern in EXTRA_INPUTS.get(notebook.stem, ()):
        matched = [p for p in REPO_ROOT.glob(pattern.format(profile=profile)) if p.stem != notebook.stem]
        _hash_files(h, matched)
    for name in _named_datasets(params):
        h.update(f"{name}:{data.fingerprint(name)}".encode())
    for package in PACKAGES:
        try:
            h.update(f"{package}=={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{package} missing".encode())
    return h.hexdigest()


def _named_datasets(params: dict[str, Any]) -> list[str]:
    from . import data

    names = []
    for key, value in params.items():
        for v in value if isinstance(value, list) else [value]:
            if "dataset" in key and isinstance(v, str) and v in data.DATASETS:
                names.append(v)
    return sorted(set(names))


def atomic_write_text(path: Path, text: str) -> None:
    from .store import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


@dataclass
class Outcome:
    notebook: str
    status: str  # "executed", "cached", "failed"
    seconds: float
    output: Path | None = None
    results: Path | None = None
    error: str = ""
    page: Path | None = None  # the rendered HTML page (``oodlib run`` only)


def _worker_env(profile: str, rows_path: Path, threads: int | None, progress: bool = False) -> dict[str, str]:
    env = {PROFILE_ENV: profile, ROWS_ENV: str(rows_path), RESULTS_ENV: str(RESULTS), "PYTHONHASHSEED": "0",
           "TQDM_DISABLE": "1", PROGRESS_ENV: "1" if progress else "0"}
    env.update({k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()})
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def execute_notebook(notebook: Path, params: dict[str, Any], executed_path: Path, results_path: Path,
                     profile: str, threads: int | None = DEFAULT_THREADS, failed_dir: Path | None = None,
                     extra: dict[str, Any] | None = None, progress: bool = False) -> Outcome:
    """Execute one notebook with papermill; on success atomically write the executed notebook and the results
    file ``{notebook, profile, parameters, rows, input_hash}``. Runs in the calling process (use
    :func:`execute_book` for parallel, isolated workers).

    ``threads`` CPU threads for the kernel's numerical libraries (None: torch's default, one per core).
    ``progress`` draws papermill's cell bar and the chapter's own bars (:mod:`oodlib.terminal`) on this
    process's standard error; nothing of them reaches the executed notebook. The kernel is started quietly
    (:func:`_kernel_options`)."""
    import jupytext
    import papermill

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oodlib-run-") as tmp:
        rows_path = Path(tmp) / "rows.json"
        saved_env = dict(os.environ)
        os.environ.update(_worker_env(profile, rows_path, threads, progress))  # inherited by the kernel
        out_tmp = Path(tmp) / executed_path.name
        nb = jupytext.read(notebook)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata.setdefault("language_info", {"name": "python"})
        try:
            papermill.execute_notebook(nb, str(out_tmp), parameters=params,
                                       cwd=str(notebook.parent), kernel_name="python3", progress_bar=progress,
                                       log_output=False, **_kernel_options(Path(tmp)))
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
            if failed_dir is not None and out_tmp.exists():
                failed_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(out_tmp, failed_dir / executed_path.name)
            return Outcome(notebook.stem, "failed", time.perf_counter() - start, error=_describe(exc))
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
        seconds = time.perf_counter() - start
        rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
        # no run time or other machine-dependent value here: two builds of one profile give identical files
        record = {"notebook": notebook.stem, "profile": profile, "parameters": params, "rows": rows, **(extra or {})}
        executed_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(executed_path, out_tmp.read_text())
        atomic_write_text(results_path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return Outcome(notebook.stem, "executed", seconds, executed_path, results_path)


def _kernel_options(folder: Path) -> dict[str, Any]:
    """papermill's keyword arguments for a quiet kernel, its configuration file written to ``folder``:

    - no capture of the kernel's file descriptors 1 and 2 (``capture_fd_output``), so what a C library or a
      progress bar writes there goes to the terminal, never into a cell's output;
    - two log lines of every successful run dropped (:class:`oodlib.terminal.KernelLogFilter`): ipykernel's
      notice that its localhost TCP sockets are unencrypted (the messages are HMAC-signed with a per-kernel
      key; IPC sockets would avoid it but collide between kernels started side by side in one folder) and the
      interrupt that jupyter_client sends before every shutdown; every other kernel log line stays.
    """
    config = folder / "kernel_config.json"
    config.write_text(json.dumps({"IPKernelApp": {"capture_fd_output": False, "logging_config": {
        "filters": {"quiet": {"()": "oodlib.terminal.KernelLogFilter"}},
        "handlers": {"console": {"filters": ["quiet"]}}}}}))
    return {"extra_arguments": [f"--IPKernelApp.extra_config_file={config}"]}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text.strip() else "".join(traceback.format_exception(exc))


def _state_path(profile: str, stem: str) -> Path:
    return BUILD / "state" / profile / f"{stem}.json"


def _is_current(profile: str, stem: str, digest: str, executed: Path, results: Path) -> bool:
    state = _state_path(profile, stem)
    if not (state.exists() and executed.exists() and results.exists()):
        return False
    return json.loads(state.read_text()).get("input_hash") == digest


class MissingDataError(RuntimeError):
    """A chapter's parameters name a dataset that is not on disk; the message names the fetch commands."""


def check_data(params_by_notebook: dict[str, dict[str, Any]]) -> None:
    """Refuse, before any work, parameters that name real datasets missing from the data folder."""
    from . import data

    missing = sorted({(name, stem) for stem, params in params_by_notebook.items()
                      for name in _named_datasets(params) if data.fingerprint(name) == "missing"})
    if missing:
        lines = [f"  {name} (needed by {stem}): {data.fetch_command(name)}" for name, stem in missing]
        raise MissingDataError(f"datasets missing from {data.data_dir()} — fetch them first (needs internet):\n"
                               + "\n".join(lines))


def execute_book(profile: str, jobs: int = 1, threads: int | None = DEFAULT_THREADS, force: bool = False,
                 log=print) -> list[Outcome]:
    """Execute every stale notebook of the book for ``profile``; returns one outcome per notebook."""
    notebooks = book_notebooks()
    params = {nb.stem: effective_parameters(nb, profile) for nb in notebooks}  # validates all before any work
    check_data(params)
    outcomes: list[Outcome] = []
    regular = [nb for nb in notebooks if nb.stem not in FINAL_NOTEBOOKS]
    final = [nb for nb in notebooks if nb.stem in FINAL_NOTEBOOKS]
    for group in (regular, final):
        outcomes += _execute_group(group, params, profile, jobs, threads, force, log)
    return outcomes


def _execute_group(group: list[Path], params: dict, profile: str, jobs: int, threads: int | None, force: bool,
                   log) -> list[Outcome]:
    todo, outcomes = [], []
    for nb in group:
        executed, results = BUILD / "executed" / profile / f"{nb.stem}.ipynb", RESULTS / profile / f"{nb.stem}.json"
        digest = input_hash(nb, params[nb.stem], profile)
        if not force and _is_current(profile, nb.stem, digest, executed, results):
            outcomes.append(Outcome(nb.stem, "cached", 0.0, executed, results))
            log(f"  up to date  {nb.stem}")
        else:
            todo.append((nb, executed, results, digest))
    with cf.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(execute_notebook, nb, params[nb.stem], executed, results, profile, threads,
                               BUILD / "failed" / profile, {"input_hash": digest}): (nb, digest)
                   for nb, executed, results, digest in todo}
        for future in _progress(cf.as_completed(futures), total=len(futures)):
            nb, digest = futures[future]
            outcome = future.result()
            state = _state_path(profile, nb.stem)
            if outcome.status == "executed":
                atomic_write_text(state, json.dumps({"input_hash": digest, "seconds": outcome.seconds}))
                log(f"  executed    {nb.stem} ({outcome.seconds:.0f} s)")
            else:
                state.unlink(missing_ok=True)
                log(f"  FAILED      {nb.stem} ({outcome.seconds:.0f} s)\n{outcome.error}")
            outcomes.append(outcome)
    return outcomes


def _progress(iterable, total: int):
    """A tqdm bar on the command line (a terminal only), never inside the book's notebooks."""
    if not sys.stderr.isatty() or total == 0:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="chapters", unit="nb", leave=False)


def run_one(notebook: Path, profile: str, overrides: dict[str, Any], threads: int | None = DEFAULT_THREADS,
            progress: bool = False, html: bool = True) -> Outcome:
    """``python -m oodlib run``: execute one chapter with new parameters into ``runs/<name>-<profile>-<hash>/``,
    never touching the book's outputs; with ``html``, also render its page there (:func:`render_page`,
    ``Outcome.page``). ``threads`` and ``progress`` as in :func:`execute_notebook`.

    Raises :class:`BookBuildError` when the chapter ran but Jupyter Book could not render its page."""
    params = effective_parameters(notebook, profile, overrides)
    check_data({notebook.stem: params})
    tag = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    out_dir = RUNS / f"{notebook.stem}-{profile}-{tag}"
    outcome = execute_notebook(notebook, params, out_dir / f"{notebook.stem}.ipynb", out_dir / "results.json",
                               profile, threads=threads, failed_dir=out_dir / "failed", progress=progress)
    if html and outcome.status == "executed" and outcome.output is not None:
        outcome.page = render_page(outcome.output, out_dir / "html")
    return outcome


# ---------------------------------------------------------------------------------------------- the book build

def stage_book(profile: str, outcomes: list[Outcome]) -> Path:
    """Assemble the book's sources for ``profile`` in ``_build/stage/<profile>``: configuration, prose pages and
    the executed notebooks. Unchanged files keep their timestamps, so Sphinx rebuilds only what changed."""
    stage = BUILD / "stage" / profile
    for name in ("_config.yml", "_toc.yml"):
        _sync(REPO_ROOT / name, stage / name)
    for src in (REPO_ROOT / "book").rglob("*"):
        if src.is_file():
            _sync(src, stage / src.relative_to(REPO_ROOT))
    for nb in book_notebooks():
        executed = BUILD / "executed" / profile / f"{nb.stem}.ipynb"
        _sync_text(book_ready(executed.read_text()), stage / "notebooks" / f"{nb.stem}.ipynb")
    _sync_text(execution_status_page(profile, outcomes), stage / "book" / "execution_status.md")
    return stage


HIDDEN_SOURCE_TAGS = {"remove-cell", "remove-input", "hide-cell", "hide-input"}


def book_ready(notebook_json: str) -> str:
    """An executed notebook as the book shows it: papermill's injected parameters cell (tag
    ``injected-parameters``) removed (``remove-cell``; the profile banner states the parameters), and every
    other code cell's source collapsed (``hide-input``: one click shows it) unless a tag already decides;
    outputs, the profile banner among them, stay visible. The executed notebook itself is not changed."""
    nb = json.loads(notebook_json)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags:
            tags.append("remove-cell")
        elif not HIDDEN_SOURCE_TAGS & set(tags):
            tags.append("hide-input")
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def render_page(executed: Path, out: Path) -> Path:
    """Render one executed chapter as a stand-alone HTML page in the book's theme (Jupyter Book with the
    book's ``_config.yml`` and bibliographies, never re-executing): glue resolved, figures, the profile banner,
    the injected parameters cell removed and code collapsed as in the book (:func:`book_ready`), the cited
    references on a second page. Links to other chapters are left as text. ``out`` is replaced; returns
    ``out/notebooks/<chapter>.html``.

    Raises :class:`BookBuildError` with Jupyter Book's last messages if it fails."""
    stem = executed.stem
    with tempfile.TemporaryDirectory(prefix="oodlib-page-") as tmp:
        stage = Path(tmp) / "stage"
        for bib in (REPO_ROOT / "book").glob("*.bib"):
            _sync(bib, stage / "book" / bib.name)
        _sync(REPO_ROOT / "_config.yml", stage / "_config.yml")
        _sync(REPO_ROOT / "book" / "bibliography.md", stage / "book" / "bibliography.md")  # resolves citations
        for css in (REPO_ROOT / "book" / "_static").glob("*"):
            _sync(css, stage / "book" / "_static" / css.name)
        _sync_text(f"format: jb-book\nroot: notebooks/{stem}\nchapters:\n  - file: book/bibliography\n",
                   stage / "_toc.yml")
        _sync_text(book_ready(executed.read_text()), stage / "notebooks" / f"{stem}.ipynb")
        cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(stage), "--path-output",
               str(Path(tmp) / "work"), "--builder", "html", "--quiet"]
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        built = Path(tmp) / "work" / "_build" / "html"
        if done.returncode != 0 or not (built / "notebooks" / f"{stem}.html").exists():
            raise BookBuildError(f"Jupyter Book could not render {executed}:\n{(done.stdout + done.stderr)[-3000:]}")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(built, out)
    return out / "notebooks" / f"{stem}.html"


def _sync(src: Path, dst: Path) -> None:
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _sync_text(text: str, dst: Path) -> None:
    if dst.exists() and dst.read_text() == text:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)


def execution_status_page(profile: str, outcomes: list[Outcome]) -> str:
    """The book's execution-status page: each chapter's last successful run time (from its results file)."""
    lines = ["# Execution status", "",
             f"Profile: **{profile}**. Each chapter was executed by the runner (`python -m oodlib book`) with "
             "papermill; the time is that of the run whose outputs this book shows (a chapter whose inputs did "
             "not change is not re-executed).", "",
             "```{list-table} Chapter execution times", ":header-rows: 1", ":name: tbl-execution-status", "",
             "* - chapter", "  - run time (s)", "  - parameters hash"]
    total = 0.0
    for outcome in outcomes:
        state_file = _state_path(profile, outcome.notebook)
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        seconds = float(state.get("seconds", float("nan")))
        total += seconds if seconds == seconds else 0.0
        lines += [f"* - {outcome.notebook}", f"  - {seconds:.1f}", f"  - `{state.get('input_hash', '')[:10]}`"]
    lines += ["* - **total**", f"  - **{total:.1f}**", "  - ", "```", ""]
    return "\n".join(lines)


class BookBuildError(RuntimeError):
    """Jupyter Book (Sphinx) reported an error or, in strict mode, a warning."""


def html_dir(profile: str) -> Path:
    """Where the HTML of a profile goes: ``_build/html`` for default, ``_build/<profile>/html`` otherwise."""
    return BUILD / "html" if profile == "default" else BUILD / profile / "html"


def build_html(profile: str, stage: Path, strict: bool = True) -> Path:
    """Run Jupyter Book on the staged sources (never executing notebooks); warnings are errors if ``strict``. The
    HTML is copied to :func:`html_dir` (``_build/html`` for the default profile), whose path is returned.

    Raises
    ------
    BookBuildError
        If Jupyter Book fails (its report is printed first).
    """
    out = html_dir(profile)
    work = BUILD / "sphinx" / profile
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(stage), "--path-output", str(work),
           "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    marker, config = work / ".last-good-build", _config_digest(stage, strict)
    if not (marker.exists() and marker.read_text() == config):
        cmd.append("--all")  # Sphinx's incremental build would hide the pages/warnings of a failed earlier build
    marker.unlink(missing_ok=True)
    # Jupyter Book's own report (its parser configurations, the path of its build folder, not the book's) is shown
    # only when the build fails; Sphinx's warnings and errors reach standard error either way.
    done = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(done.stdout, end="", flush=True)
        raise BookBuildError(f"Jupyter Book failed for profile {profile}; see the messages above and "
                             f"{work / '_build' / 'html' / 'reports'}")
    built = work / "_build" / "html"
    if out.exists() or out.is_symlink():
        if out.is_symlink() or out.is_file():
            out.unlink()
        else:
            shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(built, out)
    marker.write_text(config)
    return out


def _config_digest(stage: Path, strict: bool) -> str:
    h = hashlib.sha256(str(strict).encode())
    _hash_files(h, [stage / "_config.yml", stage / "_toc.yml", *(stage / "book").glob("*.bib")], root=stage)
    return h.hexdigest()
