"""Parameter declarations: every chapter parameter declared once in a form papermill reads, every profile valid,
YAML 1.2 numbers, the issue's invalid values refused before any kernel starts (nothing on disk changes), and a
plain papermill run stopped in the first code cell with the runner's message."""

import ast
import re
import textwrap
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from oodlib import params
from oodlib.__main__ import main
from oodlib.params import ParameterError, chapter_schema, effective_parameters, parse_override, validate

NOTEBOOKS = sorted((params.REPO_ROOT / "notebooks").glob("*.py"))
CHAPTERS = [nb.stem for nb in NOTEBOOKS]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 21


@pytest.mark.parametrize("stem", CHAPTERS)
def test_papermill_inspection_reads_every_declaration(stem, tmp_path):
    path = params.REPO_ROOT / "notebooks" / f"{stem}.py"
    ipynb = tmp_path / f"{stem}.ipynb"
    nbformat.write(jupytext.read(path), ipynb)
    inspected = papermill.inspect_notebook(str(ipynb))
    schema = chapter_schema(path)
    assert list(inspected) == list(schema)
    for name, declaration in schema.items():
        assert inspected[name]["inferred_type_name"] == declaration.type
        assert inspected[name]["help"] == f"{declaration.constraint}; {declaration.description}"
        assert declaration.description, f"{stem}: {name} has no description"
        assert ast.literal_eval(inspected[name]["default"]) == declaration.default


@pytest.mark.parametrize("profile", params.PROFILES)
@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_profile_and_default_validates(stem, profile):
    path = params.REPO_ROOT / "notebooks" / f"{stem}.py"
    values = effective_parameters(path, profile)
    assert values["profile"] == profile
    validate(path, {name: d.default for name, d in chapter_schema(path).items()})


@pytest.mark.parametrize("stem", CHAPTERS)
def test_first_code_cell_checks_the_declarations_before_any_work(stem):
    nb = jupytext.read(params.REPO_ROOT / "notebooks" / f"{stem}.py")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    body = ast.parse(code[1].source).body
    first_work = next(i for i, node in enumerate(body) if not isinstance(node, (ast.Import, ast.ImportFrom)))
    call = body[first_work]
    assert ast.unparse(call) == f"check_chapter({stem!r}, globals())"


def _toy(tmp_path: Path, cell: str) -> Path:
    path = tmp_path / "toy.py"
    path.write_text('# %% tags=["parameters"]\n' + textwrap.dedent(cell) + "\n# %%\nprint(1)\n")
    return path


@pytest.mark.parametrize("cell, message", [
    ("x = 1\n", "parameter 'x' has no declared type (got 'None')"),
    ("x = 1  # > 0; count\n", "parameter 'x' has no declared type (got 'None')"),
    ("x: tuple = (1,)  # any; pair\n", "parameter 'x' has no declared type (got 'tuple')"),
    ("x: int = 1\n", "parameter 'x' has no constraint"),
    ("x: int = 1  # >= 0; count\n", "parameter 'x' has no declaration papermill can read"),  # papermill skips '='
    ("x: int = 1  # positive; count\n", "cannot read the constraint clause 'positive'"),
    ("x: str = 'a'  # one of colours; name\n", "unknown registry 'colours'"),
    ("x: int = 1  # nonempty; count\n", "need a list type"),
    ("x: list[int] = [1]  # length of y; counts\n", "its constraint names 'y', which is not a parameter"),
    ("x: int = 0  # > 0; count\n", "the default value breaks its declaration: parameter 'x' = 0: must be > 0"),
])
def test_a_parameter_without_a_valid_declaration_is_an_error(tmp_path, cell, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        chapter_schema(_toy(tmp_path, cell))


def test_multi_line_declaration_takes_the_comment_of_its_last_line(tmp_path):
    path = _toy(tmp_path, 'rows: list[str] = ["MSP",\n                   "ODIN"]  # one of leaderboard rows; rows\n'
                          'n: int = 2  # > 0; count\n')
    schema = chapter_schema(path)
    assert schema["rows"].default == ["MSP", "ODIN"] and schema["rows"].constraint == "one of leaderboard rows"
    with pytest.raises(ParameterError, match="'X' is not one of the leaderboard rows; valid choices: MSP, ODIN"):
        validate(path, {"rows": ["X"]})


def test_constraint_grammar(tmp_path):
    path = _toy(tmp_path, '''\
        p: float = 0.5  # in [0, 1]; probability
        q: float = 0.5  # in (0, 1); open
        t: float = 1.0  # at most 2 and > 0; bounded
        c: int = 1  # one of {1, 3}; channels
        xs: list[float] = [1.0, 2.0]  # any and nonempty; values
        x: float = 2.0  # in xs; one of the values
        ys: list[int] = [0, 0]  # at least 0 and length of xs; one per value
        limit: "Optional[int]" = None  # > 0; at most this many
        ''')
    assert validate(path, {"p": 1, "q": 0.25, "c": 3, "limit": 5, "x": 1.0}) == {
        "p": 1.0, "q": 0.25, "c": 3, "limit": 5, "x": 1.0}
    assert validate(path, {"limit": None}) == {"limit": None}
    for values, message in [({"p": 1.5}, "parameter 'p' = 1.5: must be in [0, 1]"),
                            ({"q": 1.0}, "parameter 'q' = 1.0: must be in (0, 1)"),
                            ({"t": 3.0}, "parameter 't' = 3.0: must be at most 2"),
                            ({"t": 0.0}, "parameter 't' = 0.0: must be > 0"),
                            ({"c": 2}, "2 is not a valid choice; valid choices: 1, 3"),
                            ({"x": 3.0}, "parameter 'x' = 3.0: 3.0 is not in 'xs'; valid choices: 1.0, 2.0"),
                            ({"xs": [2.0]},
                             "parameter 'ys' = [0, 0]: must have one value per entry of 'xs' (1: [2.0]), got 2"),
                            ({"ys": [0, -1]}, "parameter 'ys' = [0, -1]: must be at least 0 (value -1)"),
                            ({"limit": 0}, "parameter 'limit' = 0: must be > 0"),
                            ({"xs": 1.0}, "parameter 'xs' = 1.0: must be a list (declared list[float]), got float")]:
        with pytest.raises(ParameterError, match=re.escape(message)):
            validate(path, values)


@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("1e3", 1000.0), ("-1E+2", -100.0), (".5", 0.5), ("1.0e3", 1000.0), ("5", 5), ("-1.0", -1.0),
    ("[1e-3, 0.01]", [0.001, 0.01]), ("true", True), ("[noise, ct]", ["noise", "ct"]), ("1e", "1e"),
    ("cuda:1", "cuda:1"),
])
def test_overrides_are_read_with_yaml_1_2_numbers(text, value):
    name, parsed = parse_override("x", text)
    assert parsed == value and type(parsed) is type(value)


def test_scientific_notation_works_in_overrides_and_profile_files(tmp_path):
    chapter = params.REPO_ROOT / "notebooks" / "section2_1_algorithm.py"
    overrides = dict(parse_override(n, t) for n, t in [("eps", "1e-3"), ("steps", "1e3"),
                                                       ("step_size_factors", "[1e-3, 0.01]")])
    values = effective_parameters(chapter, "smoke", overrides)
    assert values["steps"] == 1000 and type(values["steps"]) is int
    assert values["eps"] == 0.001 and values["step_size_factors"] == [0.001, 0.01]
    (tmp_path / "smoke.yml").write_text("notebooks:\n  section2_1_algorithm: {eps: 1e-2, steps: 2e1, n_samples: 4}\n")
    values = effective_parameters(chapter, "smoke", params_dir=tmp_path)
    assert (values["eps"], values["steps"]) == (0.01, 20) and type(values["steps"]) is int
    with pytest.raises(ParameterError, match=re.escape("parameter 'steps' = 2.5: must be an integer")):
        effective_parameters(chapter, "smoke", dict([parse_override("steps", "2.5e0")]))


def test_check_chapter_converts_the_kernel_values_in_place():
    namespace = {name: d.default for name, d in chapter_schema(
        params.REPO_ROOT / "notebooks" / "section2_1_algorithm.py").items()}
    namespace.update(steps=1000.0, eps=5)
    params.check_chapter("section2_1_algorithm", namespace)
    assert namespace["steps"] == 1000 and type(namespace["steps"]) is int and type(namespace["eps"]) is float
    namespace["eps"] = -1.0
    with pytest.raises(ParameterError, match=re.escape("parameter 'eps' = -1.0: must be > 0")):
        params.check_chapter("section2_1_algorithm", namespace)


ISSUE_CASES = [
    ("appendix_c_odin", ["-p", "temperatures", "[0.0]"], "parameter 'temperatures' = [0.0]: must be > 0"),
    ("appendix_d_mahalanobis", ["-p", "ridge", "-1.0"], "parameter 'ridge' = -1.0: must be > 0"),
    ("beyond_leaderboard", ["-p", "rows", "[MSP, NotADetector]"],
     "'NotADetector' is not one of the leaderboard rows; valid choices: MSP, ODIN, Mahalanobis, Energy, OE, "
     "ALOE, ATOM, AOE, BAL"),
    ("appendix_g_confidence_calibrated", ["-p", "betas", "[0.1, 0.1]"],
     "parameter 'betas' = [0.1, 0.1]: must have one value per entry of 'datasets' (1: ['digits']), got 2"),
    ("section2_1_algorithm", ["-p", "profile", "paper"],
     "parameter 'profile' cannot be set by -p (got 'paper'); choose the profile with --profile"),
    ("section2_1_algorithm", ["-p", "steps", "1e3", "-p", "step_size_factors", "[1e-3, x]"],
     "parameter 'step_size_factors' = [0.001, 'x']: must be a number (declared list[float]), got str (value 'x')"),
    ("section3_2_glow", ["-p", "sweep_start", "noise"], "'noise' is not in 'attack_starts'"),
]


def _snapshot() -> dict[str, tuple[int, int]]:
    files = {}
    for folder in ("results", "_build", ".cache", "runs"):
        for path in (params.REPO_ROOT / folder).rglob("*"):
            stat = path.lstat()
            files[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return files


@pytest.mark.parametrize("stem, args, message", ISSUE_CASES)
def test_issue_cases_are_refused_before_any_kernel_and_change_nothing(stem, args, message, capsys):
    before = _snapshot()
    code = main(["run", str(params.REPO_ROOT / "notebooks" / f"{stem}.py"), "--profile", "smoke", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert _snapshot() == before


@pytest.mark.parametrize("name, value", [("ridge", -1.0), ("ridge_typo", 1.0)])
def test_plain_papermill_run_stops_in_the_first_code_cell_with_the_runners_message(tmp_path, capsys, name, value):
    stem = "appendix_d_mahalanobis"
    path = params.REPO_ROOT / "notebooks" / f"{stem}.py"
    assert main(["run", str(path), "--profile", "smoke", "-p", name, str(value)]) == 2
    runner_message = capsys.readouterr().err.strip().removeprefix("error: ")
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(jupytext.read(path), str(out), parameters={name: value},
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    assert failure.value.ename == "ParameterError"
    assert failure.value.evalue == runner_message
    executed = nbformat.read(out, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert "injected-parameters" in code[1].metadata.get("tags", [])
    assert code[2].outputs[-1]["ename"] == "ParameterError"  # the first code cell after the parameters
    assert all(c.execution_count is None for c in code[3:])


@pytest.mark.parametrize("text, expected", [("010", 10), ("0o10", 8), ("0x10", 16), ("-3", -3), ("1:30", "1:30"),
                                            ("1e3", 1000.0), ("[1e-3, 0.01]", [0.001, 0.01])])
def test_yaml_numbers_follow_yaml_1_2(text, expected):
    assert params.parse_override("x", text) == ("x", expected)
    assert type(params.parse_override("x", text)[1]) is type(expected)


def test_unreadable_yaml_huge_integers_and_non_chapters_are_parameter_errors(capsys):
    path = params.REPO_ROOT / "notebooks" / "section2_1_algorithm.py"
    with pytest.raises(params.ParameterError, match="cannot read '\\[1, 2' as a YAML value"):
        params.parse_override("eps", "[1, 2")
    with pytest.raises(params.ParameterError, match="at most 2\\*\\*63"):
        params.effective_parameters(path, "smoke", {"eps": 10**300})
    for integral_float in (1e19, 1e30):  # an int parameter given as a float becomes an integer beyond int64
        with pytest.raises(params.ParameterError, match="at most 2\\*\\*63"):
            params.effective_parameters(path, "smoke", {"steps": integral_float})
    assert main(["run", "", "--profile", "smoke"]) == 2
    assert "no notebook given" in capsys.readouterr().err
    assert main(["run", str(params.PARAMS_DIR / "smoke.yml"), "--profile", "smoke"]) == 2
    assert "is not a chapter" in capsys.readouterr().err
    assert main(["run", str(path), "--profile", "smoke", "-p", "eps", "[1, 2"]) == 2
