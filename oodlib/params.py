"""Parameter declarations, profiles and their validation.

Every chapter declares each parameter once, in its ``parameters`` cell, as an annotated assignment whose trailing
comment starts with a constraint::

    eps: float = 10.0  # > 0; L2 budget ε of the attack
    archs: list[str] = ["small_cnn", "mlp"]  # one of archs and nonempty; classifiers attacked
    eps_medical: list[float] = [5.0, 10.0]  # > 0 and length of archs; ε per architecture

This is the form papermill's own parameter inspection reads (``papermill.inspect_notebook``: name, type, default,
help), and :func:`chapter_schema` reads it through papermill's parser. The help comment is ``CONSTRAINT;
DESCRIPTION``; the constraint is one or more clauses joined by `` and `` (no ``=`` anywhere in the line: papermill
skips such lines):

- ``any`` — only the type is checked;
- ``> x``, ``< x``, ``at least x``, ``at most x``, ``in [a, b]`` (brackets ``(`` ``)`` for open ends, ``inf``); the
  bound of the first four may be another parameter's name (``at least n_components``);
- ``one of REGISTRY`` — a name from a registry: datasets, archs, detectors, start images, recipes, leaderboard
  rows, schedules, routines, devices, profiles; ``one of {a, b}`` — a literal choice;
- ``in NAME`` — a value of the list parameter NAME;
- ``length of NAME`` — a list as long as the list parameter NAME; ``nonempty`` — a list with at least one value.

Types: ``int``, ``float``, ``bool``, ``str``, ``dict``, ``list[int]``, ``list[float]``, ``list[str]`` and
``"Optional[int]"`` (None or an int). On a list, the value clauses (bounds, choices, ``in``) apply to each element.
Numbers are finite; booleans are never numbers; an integral float given for an int (``1e3``) becomes that int and
an int given for a float becomes a float.

The same declaration is checked before any work starts (:func:`effective_parameters`, called by
``python -m oodlib run`` / ``book``) and in each chapter's first code cell (:func:`check_chapter`), so a plain
papermill run stops there with the same message. A profile (``notebooks/params/<profile>.yml``) holds ``common``
values (applied to every notebook that declares them) and one section per notebook under ``notebooks``; profile
files and ``-p`` values are read as YAML with YAML 1.2 numbers (``1e-3`` is a float).
"""

from __future__ import annotations

import ast
import functools
import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jupytext
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "notebooks" / "params"
PROFILES: tuple[str, ...] = ("smoke", "default", "paper")
TYPES: tuple[str, ...] = ("int", "float", "bool", "str", "dict", "list[int]", "list[float]", "list[str]",
                          "Optional[int]")


class ParameterError(ValueError):
    """An invalid parameter name, value or declaration, or an unknown profile."""


# ------------------------------------------------------------------------------------------------------- YAML

class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3``, ``1e3`` and ``.5`` are numbers, not strings."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in YamlLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    """YAML 1.2 core integers: decimal (``010`` is ten, not octal eight), ``0o`` octal, ``0x`` hexadecimal; no
    YAML 1.1 base-60 (``1:30`` stays a string)."""
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


YamlLoader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`YamlLoader` (YAML 1.2 numbers)."""
    return yaml.load(text, Loader=YamlLoader)


# ----------------------------------------------------------------------------------------------- registries

def _registry(module: str, attribute: str, *registering: str) -> Callable[[], tuple[str, ...]]:
    """The names in ``oodlib.<module>.<attribute>``, imported when first asked for (after the ``registering``
    modules, whose import adds entries: ATOM and BAL register from ``defenses``)."""
    def names() -> tuple[str, ...]:
        for extra in registering:
            importlib.import_module(f"oodlib.{extra}")
        return tuple(getattr(importlib.import_module(f"oodlib.{module}"), attribute))
    return names


REGISTRIES: dict[str, Callable[[], tuple[str, ...]]] = {
    "datasets": _registry("data", "DATASETS"), "archs": _registry("models", "ARCHS"),
    "detectors": _registry("detectors", "DETECTORS", "defenses"),
    "start images": _registry("data", "START_IMAGES"),
    "recipes": _registry("training", "RECIPES", "recipes"),
    "leaderboard rows": _registry("defenses.leaderboard", "ROWS"), "schedules": _registry("attack.ood", "SCHEDULES"),
    "routines": _registry("attack.ood", "ROUTINES"),
    "devices": lambda: ("auto", "cpu", "cuda", "cuda:N"), "profiles": lambda: PROFILES}
"""The named choices ``one of REGISTRY`` refers to; each imports only the module that holds it."""


def _in_registry(registry: str, value: Any) -> bool:
    if registry == "devices" and isinstance(value, str) and re.fullmatch(r"cuda:[0-9]+", value):
        return True
    return value in REGISTRIES[registry]()


# ------------------------------------------------------------------------------------------------ declarations

Check = Callable[[Any, dict[str, Any]], "str | None"]  # (value, all values) → reason it fails, or None


@dataclass(frozen=True)
class Declaration:
    """One declared parameter: ``name: type = default  # constraint; description``."""

    name: str
    type: str
    constraint: str
    description: str
    default: Any
    element_checks: tuple[Check, ...]  # on the value, or on each element of a list
    list_checks: tuple[Check, ...]  # on a list as a whole


def _clause(text: str, where: str) -> tuple[str, Check]:
    """One constraint clause → ("element" | "list", check)."""
    text = text.strip()
    if text == "any":
        return "element", lambda v, values: None
    if text == "nonempty":
        return "list", lambda v, values: None if len(v) else "must have at least one value"
    m = re.fullmatch(r"(>|<|at least|at most)\s+([A-Za-z_]\w*)", text)
    if m:  # a bound given by another parameter: `at least n_components`
        op, other = m.group(1), m.group(2)
        compare = {">": lambda v, b: v > b, "<": lambda v, b: v < b, "at least": lambda v, b: v >= b,
                   "at most": lambda v, b: v <= b}[op]
        return "element", lambda v, values: None if compare(v, values[other]) else (
            f"must be {text} ({other} = {values[other]!r})")
    m = re.fullmatch(r"(>|<|at least|at most)\s+(\S+)", text)
    if m:
        op, bound = m.group(1), float(m.group(2))
        test = {">": lambda v: v > bound, "<": lambda v: v < bound, "at least": lambda v: v >= bound,
                "at most": lambda v: v <= bound}[op]
        return "element", lambda v, values: None if test(v) else f"must be {text}"
    m = re.fullmatch(r"in\s*([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])", text)
    if m:
        low, high, shown = float(m.group(2)), float(m.group(3)), text[2:].strip()
        closed_low, closed_high = m.group(1) == "[", m.group(4) == "]"

        def interval(v: Any, values: dict[str, Any]) -> str | None:
            ok = (v >= low if closed_low else v > low) and (v <= high if closed_high else v < high)
            return None if ok else f"must be in {shown}"
        return "element", interval
    m = re.fullmatch(r"one of\s+\{(.*)\}", text)
    if m:
        choices = tuple(load_yaml(f"[{m.group(1)}]"))
        return "element", lambda v, values: None if v in choices else (
            f"{v!r} is not a valid choice; valid choices: {', '.join(map(str, choices))}")
    m = re.fullmatch(r"one of\s+(.+)", text)
    if m:
        registry = m.group(1)
        if registry not in REGISTRIES:
            raise ParameterError(f"{where}: unknown registry {registry!r} in 'one of'; known: "
                                 f"{', '.join(REGISTRIES)}")
        return "element", lambda v, values: None if _in_registry(registry, v) else (
            f"{v!r} is not one of the {registry}; valid choices: {', '.join(REGISTRIES[registry]())}")
    m = re.fullmatch(r"in\s+(\w+)", text)
    if m:
        other = m.group(1)
        return "element", lambda v, values: None if v in values[other] else (
            f"{v!r} is not in {other!r}; valid choices: {', '.join(map(str, values[other]))}")
    m = re.fullmatch(r"length of\s+(\w+)", text)
    if m:
        other = m.group(1)
        return "list", lambda v, values: None if len(v) == len(values[other]) else (
            f"must have one value per entry of {other!r} ({len(values[other])}: {values[other]!r}), "
            f"got {len(v)}")
    raise ParameterError(f"{where}: cannot read the constraint clause {text!r} (see oodlib.params)")


def _declaration(name: str, type_name: str, help_text: str, default: Any, where: str) -> Declaration:
    if type_name not in TYPES:
        raise ParameterError(f"{where}: parameter {name!r} has no declared type (got {type_name!r}); write "
                             f"`{name}: TYPE = value  # CONSTRAINT; description` with TYPE one of "
                             f"{', '.join(TYPES)} (the last one in quotes)")
    constraint, _, description = help_text.partition(";")
    if not constraint.strip():
        raise ParameterError(f"{where}: parameter {name!r} has no constraint; write "
                             f"`{name}: {type_name} = value  # CONSTRAINT; description` (CONSTRAINT may be `any`)")
    element, whole = [], []
    for clause in constraint.split(" and "):
        kind, check = _clause(clause, f"{where}: parameter {name!r}")
        (whole if kind == "list" else element).append(check)
    if whole and not type_name.startswith("list"):
        raise ParameterError(f"{where}: parameter {name!r}: `nonempty` and `length of` need a list type")
    return Declaration(name, type_name, constraint.strip(), description.strip(), default, tuple(element),
                       tuple(whole))


def parameters_cell(notebook: str | Path) -> str:
    """The source of a notebook's cell tagged ``parameters``."""
    if Path(notebook).suffix != ".py":
        raise ParameterError(f"{notebook} is not a chapter: chapters are the py:percent notebooks "
                             f"notebooks/<name>.py (profiles are chosen with --profile, not passed as the notebook)")
    nb = jupytext.read(Path(notebook))
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ParameterError(f"{notebook} has no cell tagged 'parameters'")
    return cells[0].source


@functools.lru_cache(maxsize=256)
def _schema(source: str, where: str) -> dict[str, Declaration]:
    from papermill.translators import PythonTranslator

    namespace: dict[str, Any] = {}
    exec(compile(source, f"{where}:parameters", "exec"), {}, namespace)
    defaults = {k: v for k, v in namespace.items() if not k.startswith("_")}
    inspected = {p.name: p for p in PythonTranslator.inspect({"source": source})}
    schema = {}
    for name, default in defaults.items():
        if name not in inspected:
            raise ParameterError(f"{where}: parameter {name!r} has no declaration papermill can read; write "
                                 f"`{name}: TYPE = value  # CONSTRAINT; description` on one line without '=' "
                                 f"in the comment")
        p = inspected[name]
        schema[name] = _declaration(name, p.inferred_type_name, p.help, default, where)
    for declaration in schema.values():
        try:
            _coerce_and_check(declaration, declaration.default, defaults)
        except ParameterError as exc:
            raise ParameterError(f"{where}: the default value breaks its declaration: {exc}") from None
        except KeyError as exc:
            raise ParameterError(f"{where}: parameter {declaration.name!r}: its constraint names {exc}, which is "
                                 f"not a parameter of this chapter") from None
    return schema


def chapter_schema(notebook: str | Path) -> dict[str, Declaration]:
    """Name → :class:`Declaration` of every parameter of a chapter, in declaration order.

    Raises :class:`ParameterError` if a parameter has no declaration papermill reads, no type or constraint, an
    unreadable constraint, or a default that breaks its own declaration."""
    return _schema(parameters_cell(notebook), Path(notebook).name)


def declared_parameters(notebook: str | Path) -> dict[str, Any]:
    """The names and default values of a notebook's ``parameters`` cell."""
    return {name: d.default for name, d in chapter_schema(notebook).items()}


# ------------------------------------------------------------------------------------------------ validation

def _coerce_element(v: Any, element_type: str, declared: str) -> tuple[Any, str | None]:
    """(v converted to ``element_type``, None) or (v, the reason it cannot be)."""
    if element_type in ("int", "float"):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return v, f"must be a number (declared {declared}), got {type(v).__name__}"
        if isinstance(v, int) and abs(v) > 2**63 - 1:
            return v, "must be at most 2**63 - 1 in magnitude"
        if not math.isfinite(v):
            return v, "must be a finite number"
        if element_type == "float":
            return float(v), None
        if isinstance(v, float) and not v.is_integer():
            return v, f"must be an integer (declared {declared})"
        if abs(v) > 2**63 - 1:  # an integral float (1e30) would become an integer beyond int64
            return v, "must be at most 2**63 - 1 in magnitude"
        return int(v), None
    expected = {"bool": bool, "str": str, "dict": dict}[element_type]
    if not isinstance(v, expected):
        return v, f"must be a {element_type} (declared {declared}), got {type(v).__name__}"
    return v, None


def _coerce_and_check(d: Declaration, value: Any, values: dict[str, Any]) -> Any:
    """The value converted to the declared type (1e3 → 1000 for an int); raises ParameterError if it breaks
    the declaration."""
    if d.type == "Optional[int]" and value is None:
        return None
    is_list = d.type.startswith("list[")
    if is_list and not isinstance(value, (list, tuple)):
        raise ParameterError(f"parameter {d.name!r} = {value!r}: must be a list (declared {d.type}), got "
                             f"{type(value).__name__}")
    element_type = d.type[5:-1] if is_list else "int" if d.type == "Optional[int]" else d.type

    def fail(reason: str, element: Any) -> ParameterError:
        where = f" (value {element!r})" if is_list and "valid choices" not in reason else ""
        return ParameterError(f"parameter {d.name!r} = {value!r}: {reason}{where}")

    converted = []
    for v in value if is_list else [value]:
        v, reason = _coerce_element(v, element_type, d.type)
        if reason:
            raise fail(reason, v)
        converted.append(v)
    value = converted if is_list else converted[0]
    for check in d.list_checks:
        reason = check(value, values)
        if reason:
            raise ParameterError(f"parameter {d.name!r} = {value!r}: {reason}")
    for v in converted:
        for check in d.element_checks:
            reason = check(v, values)
            if reason:
                raise fail(reason, v)
    return value


def validate(notebook: str | Path, params: dict[str, Any],
             schema: dict[str, Declaration] | None = None) -> dict[str, Any]:
    """Check ``params`` (a subset of the chapter's parameters) against the chapter's declarations; returns them
    converted to the declared types. Cross-parameter clauses see the defaults where ``params`` has no value.

    Raises :class:`ParameterError` naming the first failing parameter (in declaration order) and what it must be.
    """
    schema = chapter_schema(notebook) if schema is None else schema
    unknown = [name for name in params if name not in schema]
    if unknown:
        raise ParameterError(f"unknown parameter {unknown[0]!r} for {Path(notebook).name}; valid names: "
                             f"{', '.join(sorted(n for n in schema if n != 'profile'))} (the profile is chosen "
                             "with --profile)")
    values = {name: d.default for name, d in schema.items()} | dict(params)
    checked = {}
    for name, declaration in schema.items():
        checked[name] = values[name] = _coerce_and_check(declaration, values[name], values)
    return {name: checked[name] for name in params}


def check_chapter(chapter: str, namespace: dict[str, Any]) -> None:
    """A chapter's first code cell: validate the kernel's parameter values (``globals()``) against the chapter's
    declarations, as the runner does before starting the kernel, and convert them to the declared types in place.

    ``chapter`` is the notebook's stem; its source is ``<cwd>/<chapter>.py`` (papermill runs chapters in their
    folder) or ``notebooks/<chapter>.py``. Raises :class:`ParameterError` with the runner's message."""
    path = Path.cwd() / f"{chapter}.py"
    path = path if path.exists() else REPO_ROOT / "notebooks" / f"{chapter}.py"
    schema = chapter_schema(path)
    bound = _names_bound_before_check(path) | set(schema) | {"In", "Out"}  # IPython's history lists
    injected = [name for name, value in namespace.items()
                if not name.startswith("_") and name not in bound and isinstance(value, _PLAIN_VALUES)]
    namespace.update(validate(path, {name: namespace[name] for name in [*schema, *injected]}, schema))


_PLAIN_VALUES = (bool, int, float, str, list, tuple, dict, type(None))  # what papermill injects


def _names_bound_before_check(path: Path) -> set[str]:
    """The names the chapter itself binds in the cell that calls :func:`check_chapter`, before the call (its
    imports): any other plain value in the kernel's namespace was injected by papermill as a parameter."""
    cell = next((c.source for c in jupytext.read(path).cells
                 if c.cell_type == "code" and "check_chapter(" in c.source), "")
    names: set[str] = set()
    for node in ast.parse(cell).body:
        if isinstance(node, ast.Expr) and "check_chapter(" in ast.unparse(node):
            break
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                names |= {(alias.asname or alias.name).split(".")[0] for alias in sub.names}
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.add(sub.id)
    return names


def load_profile(profile: str, params_dir: Path | None = None) -> dict[str, Any]:
    """The parsed profile file ``<params_dir>/<profile>.yml`` (default folder :data:`PARAMS_DIR`)."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; valid choices: {', '.join(PROFILES)}")
    folder = PARAMS_DIR if params_dir is None else params_dir
    return load_yaml((folder / f"{profile}.yml").read_text()) or {}


def effective_parameters(notebook: str | Path, profile: str, overrides: dict[str, Any] | None = None,
                         params_dir: Path | None = None) -> dict[str, Any]:
    """Parameters for one notebook: the profile's common values it declares, its own section, the overrides,
    and ``profile``; validated and converted to the declared types.

    Raises :class:`ParameterError` for an unknown profile or name, a value that breaks its declaration, or a
    ``profile`` set anywhere but ``--profile``."""
    notebook = Path(notebook)
    schema = chapter_schema(notebook)
    spec = load_profile(profile, params_dir)
    section = (spec.get("notebooks") or {}).get(notebook.stem, {}) or {}
    common = {k: v for k, v in (spec.get("common") or {}).items() if k in schema}
    for source, values in (("-p", overrides or {}), (f"profile {profile}", section), ("common", common)):
        if "profile" in values:
            raise ParameterError(f"parameter 'profile' cannot be set by {source} (got {values['profile']!r}); "
                                 f"choose the profile with --profile, e.g. --profile {values['profile']}")
    validate(notebook, section, schema)
    return validate(notebook, {**common, **section, **(overrides or {}), "profile": profile}, schema)


def parse_override(name: str, text: str) -> tuple[str, Any]:
    """``-p NAME VALUE`` from the command line: the value is read as YAML with YAML 1.2 numbers (``5`` → int,
    ``1e-3`` → float, ``[noise, ct]`` → list)."""
    try:
        return name, load_yaml(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParameterError(f"parameter {name!r}: cannot read {text!r} as a YAML value ({problem})") from None


def parameter_table(notebooks: list[Path], profiles: tuple[str, ...] = ("paper", "default", "smoke"),
                    params_dir: Path | None = None) -> list[list[Any]]:
    """Rows ``[notebook, parameter, constraint, value per profile...]`` of every parameter a notebook declares,
    for the book's Appendix A page (the paper's parameter list set beside ours)."""
    rows = []
    for nb in notebooks:
        per_profile = [effective_parameters(nb, p, params_dir=params_dir) for p in profiles]
        for name, declaration in chapter_schema(nb).items():
            if name == "profile":
                continue
            values = [_short(values.get(name, declaration.default)) for values in per_profile]
            rows.append([nb.stem, name, f"`{declaration.type}: {declaration.constraint}`", *values])
    return rows


def _short(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()
