"""Parameter validation and the notebook runner: clear errors before any work, staleness, atomic outputs."""

import inspect
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from oodlib import params, runner
from oodlib.__main__ import main
from oodlib.params import ParameterError, effective_parameters, validate

NOTEBOOK = textwrap.dedent('''\
    # %% tags=["parameters"]
    profile: str = "default"  # one of profiles; set by --profile
    seed: int = 0  # at least 0; random seed
    eps: float = 1.0  # > 0; budget
    steps: int = 3  # > 0; iterations
    dataset: str = "digits"  # one of datasets; data
    starts: list[str] = ["noise"]  # one of start images and nonempty; start images
    fail: bool = False  # any; fail on purpose

    # %%
    from oodlib.params import check_chapter
    from oodlib.report import Results

    check_chapter("toy", globals())
    assert not fail, "this notebook was asked to fail"
    r = Results()
    r.add("Toy: eps times steps", "product", eps * steps, paper=3.0)
    r.save()
    print("done", eps, steps)

    # %%
    from oodlib.report import glue_value, profile_banner
    from oodlib.terminal import terminal_progress

    glue_value("toy_product", sum(eps for _ in terminal_progress(range(steps), "toy loop")))
    profile_banner(profile, {"eps": eps, "steps": steps})

    # %% [markdown]
    # The product is {glue:text}`toy_product:.2f`.
    ''')


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """A toy notebook, profiles and build folders in tmp_path; the runner's folders point there."""
    nb = tmp_path / "notebooks" / "toy.py"
    nb.parent.mkdir()
    nb.write_text(NOTEBOOK)
    pdir = tmp_path / "params"
    pdir.mkdir()
    for profile in params.PROFILES:
        (pdir / f"{profile}.yml").write_text(yaml.safe_dump({"common": {"seed": 1},
                                                             "notebooks": {"toy": {"steps": 2}}}))
    monkeypatch.setattr(params, "PARAMS_DIR", pdir)
    monkeypatch.setattr(runner, "BUILD", tmp_path / "_build")
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(runner, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(runner, "book_notebooks", lambda toc=None: [nb])
    library = tmp_path / "oodlib_copy.py"  # a stand-in for the library (the real one may be edited meanwhile)
    library.write_text("VERSION = 1\n")
    monkeypatch.setattr(runner, "library_files", lambda: [library])
    return nb


def test_profile_values_and_overrides_are_merged(toy):
    p = effective_parameters(toy, "smoke", {"eps": 2.5}, params_dir=params.PARAMS_DIR)
    assert p == {"seed": 1, "steps": 2, "eps": 2.5, "profile": "smoke"}


@pytest.mark.parametrize("overrides, message", [
    ({"epz": 1.0}, "unknown parameter 'epz' for toy.py; valid names: dataset, eps, fail, seed, starts, steps (the profile "
                   "is chosen with --profile)"),
    ({"eps": -1.0}, "parameter 'eps' = -1.0: must be > 0"),
    ({"eps": 0}, "parameter 'eps' = 0.0: must be > 0"),
    ({"steps": 0}, "parameter 'steps' = 0: must be > 0"),
    ({"steps": 2.5}, "parameter 'steps' = 2.5: must be an integer (declared int)"),
    ({"steps": True}, "parameter 'steps' = True: must be a number (declared int), got bool"),
    ({"eps": "big"}, "parameter 'eps' = 'big': must be a number (declared float), got str"),
    ({"eps": float("nan")}, "parameter 'eps' = nan: must be a finite number"),
    ({"dataset": "cifar1000"}, "'cifar1000' is not one of the datasets; valid choices: mnist5k, digits, lfw, cifar10"),
    ({"starts": ["noise", "xray"]}, "'xray' is not one of the start images; valid choices: noise, noise_mean_matched, spiral"),
    ({"starts": []}, "parameter 'starts' = []: must have at least one value"),
    ({"seed": -1}, "parameter 'seed' = -1: must be at least 0"),
    ({"fail": 1}, "parameter 'fail' = 1: must be a bool (declared bool), got int"),
])
def test_invalid_parameters_are_rejected_with_the_valid_choices(toy, overrides, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        effective_parameters(toy, "smoke", overrides, params_dir=params.PARAMS_DIR)


def test_unknown_profile_is_rejected(toy):
    with pytest.raises(ParameterError, match="unknown profile 'fast'; valid choices: smoke, default, paper"):
        effective_parameters(toy, "fast")


def test_a_bad_profile_file_is_caught_before_any_work(toy):
    (params.PARAMS_DIR / "smoke.yml").write_text(yaml.safe_dump({"notebooks": {"toy": {"stepz": 2}}}))
    with pytest.raises(ParameterError, match="unknown parameter 'stepz'"):
        runner.execute_book("smoke")
    assert not (runner.RESULTS / "smoke").exists()


def test_detector_arch_and_device_choices(tmp_path):
    nb = tmp_path / "x.py"
    nb.write_text('# %% tags=["parameters"]\n'
                  'detector: str = "msp"  # one of detectors; detector\n'
                  'arch: str = "small_cnn"  # one of archs; classifier\n'
                  'device: str = "auto"  # one of devices; device\n')
    assert validate(nb, {"detector": "msp", "arch": "mlp", "device": "cuda:1"}) == {
        "detector": "msp", "arch": "mlp", "device": "cuda:1"}
    with pytest.raises(ParameterError, match="'oddin' is not one of the detectors; valid choices: .*odin"):
        validate(nb, {"detector": "oddin"})
    with pytest.raises(ParameterError, match="'vgg' is not one of the archs"):
        validate(nb, {"arch": "vgg"})
    with pytest.raises(ParameterError, match="'gpu' is not one of the devices; valid choices: auto, cpu, cuda"):
        validate(nb, {"device": "gpu"})


def test_execute_writes_results_with_provenance_and_skips_when_unchanged(toy):
    first = runner.execute_book("smoke", log=lambda m: None)
    assert [o.status for o in first] == ["executed"]
    record = json.loads((runner.RESULTS / "smoke" / "toy.json").read_text())
    assert record["parameters"] == {"seed": 1, "steps": 2, "profile": "smoke"}
    assert record["rows"] == [{"item": "Toy: eps times steps", "metric": "product", "measured": 2.0,
                               "paper": 3.0, "note": ""}]
    assert (runner.BUILD / "executed" / "smoke" / "toy.ipynb").exists()
    assert [o.status for o in runner.execute_book("smoke", log=lambda m: None)] == ["cached"]
    toy.write_text(NOTEBOOK.replace("eps * steps", "eps * steps * 1"))
    assert [o.status for o in runner.execute_book("smoke", log=lambda m: None)] == ["executed"]


def test_input_hash_covers_source_parameters_and_library(toy):
    base = runner.input_hash(toy, {"eps": 1.0}, "smoke")
    assert runner.input_hash(toy, {"eps": 1.0}, "smoke") == base
    assert runner.input_hash(toy, {"eps": 2.0}, "smoke") != base
    runner.library_files()[0].write_text("VERSION = 2\n")  # an edit to the library
    assert runner.input_hash(toy, {"eps": 1.0}, "smoke") != base
    toy.write_text(NOTEBOOK + "\n# an edit\n")
    assert runner.input_hash(toy, {"eps": 1.0}, "smoke") != base


def test_library_files_are_the_importable_modules():
    names = {p.name for p in runner.library_files()}
    assert {"attack", "store.py", "metrics.py"} & names == {"store.py", "metrics.py"}
    assert "runner.py" not in names and "ood.py" in names


def test_failed_notebook_keeps_last_good_outputs_and_reruns_next_time(toy):
    runner.execute_book("smoke", log=lambda m: None)
    results = runner.RESULTS / "smoke" / "toy.json"
    good = results.read_text()
    (params.PARAMS_DIR / "smoke.yml").write_text(yaml.safe_dump({"notebooks": {"toy": {"fail": True}}}))
    outcome, = runner.execute_book("smoke", log=lambda m: None)
    assert outcome.status == "failed" and "this notebook was asked to fail" in outcome.error
    assert results.read_text() == good  # the last good result is kept, never half-written
    assert (runner.BUILD / "failed" / "smoke" / "toy.ipynb").exists()
    assert not (runner.BUILD / "state" / "smoke" / "toy.json").exists()  # so it re-executes next time


def test_run_one_writes_to_its_own_folder(toy):
    runner.execute_book("smoke", log=lambda m: None)
    book_result = (runner.RESULTS / "smoke" / "toy.json").read_text()
    outcome = runner.run_one(toy, "smoke", {"eps": 5.0})
    assert outcome.status == "executed"
    assert outcome.results.parent.parent == runner.RUNS
    assert json.loads(outcome.results.read_text())["rows"][0]["measured"] == 10.0
    assert (runner.RESULTS / "smoke" / "toy.json").read_text() == book_result


def test_cli_rejects_bad_input_with_exit_code_2(toy, capsys):
    assert main(["run", str(toy), "--profile", "smoke", "-p", "eps", "-3"]) == 2
    assert "parameter 'eps' = -3.0: must be > 0" in capsys.readouterr().err
    assert main(["run", str(toy), "--profile", "smoke", "-p", "profile", "paper"]) == 2
    assert "choose the profile with --profile, e.g. --profile paper" in capsys.readouterr().err
    assert main(["run", str(toy), "--profile", "smoke", "-p", "eps", "1", "-p", "eps", "2"]) == 2
    assert "parameter 'eps' is given more than once with -p" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["run", str(toy), "--profile", "turbo"])
    assert exited.value.code == 2
    assert "invalid choice: 'turbo' (choose from 'smoke', 'default', 'paper')" in capsys.readouterr().err
    assert not runner.RUNS.exists()


def test_cli_help_documents_the_profile_the_notebook_and_the_thread_policy(capsys):
    for argv in (["--help"], ["run", "--help"], ["book", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
        assert "``" not in text and ":func:" not in text  # no reStructuredText in the help
        if argv != ["--help"]:
            assert "--profile {smoke,default,paper}" in text and "if omitted: default" in text
            assert "--threads THREADS" in text and "default: 1" in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "the chapter: its py:percent notebook" in " ".join(capsys.readouterr().out.split())


def test_cli_names_the_chapters_when_the_notebook_does_not_exist(capsys):
    assert main(["run", "section2_1_algorithmm", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no such notebook: section2_1_algorithmm; the chapters")
    assert "section2_1_algorithm," in err and "appendix_c_odin" in err and err.count("\n") == 1


def test_one_thread_policy_for_the_book_and_a_re_run():
    from oodlib.__main__ import _parser

    assert runner.DEFAULT_THREADS == 1
    assert _parser().parse_args(["run", "x.py"]).threads == _parser().parse_args(["book"]).threads == 1
    for function in (runner.run_one, runner.execute_book, runner.execute_notebook):
        assert inspect.signature(function).parameters["threads"].default == runner.DEFAULT_THREADS
    env = runner._worker_env("smoke", runner.BUILD / "rows.json", runner.DEFAULT_THREADS)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"


def test_book_notebooks_follow_the_toc_with_the_scorecard_last():
    stems = [p.stem for p in runner.book_notebooks()]
    assert stems, "the book has notebooks"
    if "reproduction_scorecard" in stems:
        assert stems[-1] == "reproduction_scorecard"


def _outputs_text(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return json.dumps([c.get("outputs", []) for c in cells])


def test_re_run_renders_the_page_and_shows_progress_on_the_terminal_only(toy, capfd):
    outcome = runner.run_one(toy, "smoke", {"eps": 5.0}, progress=True)
    assert outcome.status == "executed", outcome.error
    err = capfd.readouterr().err
    assert "toy loop" in err and "Executing" in err  # the chapter's bar and papermill's cell bar, on stderr
    assert "without encryption" not in err and "KeyboardInterrupt" not in err and "IPKernelApp" not in err
    assert "toy loop" not in _outputs_text(outcome.output)  # never in the notebook
    assert outcome.page == outcome.output.parent / "html" / "notebooks" / "toy.html"
    page = outcome.page.read_text()
    assert "The product is <span class=\"pasted-text\">10.00</span>" in page  # glue resolved with the re-run's numbers
    assert "Built with the <strong>smoke</strong> profile" in page  # the banner, rendered
    assert "{glue:text}" not in page and ":::" not in page and "{note}" not in page
    assert "tag_injected-parameters" not in page and "# Parameters" not in page
    assert "tag_hide-input" in page and "Show code cell source" in page
    assert (outcome.page.parent.parent / "_static").is_dir()  # the book's theme travels with the page


def test_book_runs_draw_no_progress_bar(toy, capfd):
    outcome, = runner.execute_book("smoke", log=lambda m: None)
    assert outcome.status == "executed", outcome.error
    err = capfd.readouterr().err
    assert "toy loop" not in err and "Executing" not in err and "IPKernelApp" not in err
    assert "toy loop" not in _outputs_text(outcome.output)


def test_book_ready_removes_the_injected_cell_and_collapses_code_but_not_outputs():
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# Title"},
             {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "eps = 1", "outputs": []},
             {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "eps = 5",
              "outputs": []},
             {"cell_type": "code", "metadata": {}, "source": "banner", "outputs": [{"output_type": "x"}]},
             {"cell_type": "code", "metadata": {"tags": ["remove-input"]}, "source": "kept", "outputs": []}]
    before = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    after = json.loads(runner.book_ready(json.dumps(before)))
    tags = [c["metadata"].get("tags") for c in after["cells"]]
    assert tags == [None, ["parameters", "hide-input"], ["injected-parameters", "remove-cell"], ["hide-input"],
                    ["remove-input"]]
    assert after["cells"][3]["outputs"] == [{"output_type": "x"}]


def test_plain_papermill_runs_a_chapter_through_jupytext(tmp_path):
    """The README's path for papermill users: jupytext writes the .ipynb, papermill runs it on one thread."""
    chapter = tmp_path / "chapters" / "toy.py"
    chapter.parent.mkdir()
    header = "# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n#     language: python\n" \
             "#     name: python3\n# ---\n\n"  # as every chapter has
    chapter.write_text(header + NOTEBOOK)
    out = tmp_path / "out.ipynb"
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("OODLIB_")}
    pipe = (f"{bin_dir / 'jupytext'} --to ipynb -o {tmp_path / 'toy.ipynb'} {chapter} && "
            f"OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 {bin_dir / 'papermill'} {tmp_path / 'toy.ipynb'} {out} -p eps 5 "
            f"--cwd {chapter.parent} --no-progress-bar")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipe], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    outputs = _outputs_text(out)
    assert "done 5.0 3" in outputs  # eps from -p (as a float, as declared), steps from the chapter's own parameters cell
    assert "toy loop" not in outputs
    rows = json.loads((chapter.parent / "results" / "interactive" / "rows.json").read_text())
    assert rows[0]["measured"] == 15
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipe.replace("-p eps 5", "-p eps -1")],
                          capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "parameter 'eps' = -1" in done.stderr  # the runner's checks still apply


def test_progress_only_where_asked_and_kernel_log_filter(monkeypatch):
    from oodlib import terminal

    items = range(3)
    monkeypatch.setenv(terminal.PROGRESS_ENV, "0")
    assert terminal.terminal_progress(items, "x") is items
    monkeypatch.delenv(terminal.PROGRESS_ENV)
    assert terminal.terminal_progress(items, "x") is items  # pytest's captured stderr is not the process's
    monkeypatch.setenv(terminal.PROGRESS_ENV, "1")
    bar = terminal.terminal_progress(items, "x")
    assert bar is not items and list(bar) == [0, 1, 2]
    quiet = terminal.KernelLogFilter()
    record = logging.LogRecord("IPKernelApp", logging.ERROR, "k.py", 1, "KeyboardInterrupt caught in kernel", (),
                               None)
    assert not quiet.filter(record)
    record.msg = "Exception in message handler:"
    assert quiet.filter(record)


def test_cli_refuses_a_device_this_machine_lacks_before_starting_a_kernel(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", "section2_1_algorithm", "--profile", "smoke", "-p", "device", "cuda"]) == 2
    assert "parameter 'device': device 'cuda' asked for, but this machine has no CUDA device" in capsys.readouterr().err
