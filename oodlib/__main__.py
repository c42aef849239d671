"""Command line of the book: re-run one chapter, build the book, check a profile.

    python -m oodlib run notebooks/section2_1_algorithm.py --profile default -p eps 5 -p steps 200
    python -m oodlib book --profile default --jobs 2
    python -m oodlib validate --profile paper

Every chapter kernel runs on one CPU thread by default (--threads), in the book and in a re-run alike.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .params import PROFILES, ParameterError, effective_parameters, parse_override

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _profile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="default", choices=PROFILES,
                        help="parameter profile, one of the files notebooks/params/<profile>.yml: smoke (tiny "
                             "sizes for CI, seconds per chapter), default (embedded data, CPU) or paper (the "
                             "paper's scale, real datasets); if omitted: %(default)s")


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="CPU threads of each chapter's kernel (default: %(default)s, the book's policy; "
                             "more threads can change the last bits of the results)")


def _positive_int(text: str) -> int:
    """argparse type of ``--threads`` and ``--jobs``: an integer of at least 1 (the message names no function)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m oodlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="re-execute one chapter with new parameters into runs/ (never the book's) "
                                     "and render its HTML page there",
                         description="Re-execute one chapter with new parameters into runs/<chapter>-<profile>-"
                                     "<hash>/: the executed notebook, its results file and its rendered HTML page "
                                     "(the book's outputs are never touched). Progress is shown on standard "
                                     "error.")
    run.add_argument("notebook", type=Path,
                     help="the chapter: its py:percent notebook (notebooks/section2_1_algorithm.py) or its name "
                          "(section2_1_algorithm)")
    _profile_option(run)
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter; VALUE is read as YAML with YAML 1.2 numbers (5, 1e-3, [noise, ct], "
                          "true); the profile is set with --profile only")
    _threads_option(run)
    run.add_argument("--no-html", action="store_true", help="do not render the HTML page (saves ~15 s)")
    book = sub.add_parser("book", help="execute stale notebooks of a profile, then build the HTML book",
                          description="Execute every chapter of a profile whose inputs changed (the others are "
                                      "cached), in parallel, one thread each; write results/<profile>/ and "
                                      "_build/executed/<profile>/; then build the HTML book into _build/html "
                                      "(default profile) or _build/<profile>/html. The execution-status page "
                                      "lists each chapter's run time.")
    _profile_option(book)
    book.add_argument("--jobs", type=_positive_int, default=min(2, os.cpu_count() or 1),
                      help="notebooks executed in parallel (default: 2 or the number of CPUs)")
    _threads_option(book)
    book.add_argument("--force", action="store_true", help="re-execute every notebook")
    book.add_argument("--no-build", action="store_true", help="execute only; do not run Jupyter Book")
    book.add_argument("--no-strict", action="store_true", help="do not treat Sphinx warnings as errors")
    validate = sub.add_parser("validate", help="check a profile's parameters for every notebook")
    _profile_option(validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "book":
            return _book(args)
        return _validate(args)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .runner import MissingDataError

        if not isinstance(exc, MissingDataError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .models import resolve_device
    from .runner import BookBuildError, run_one

    notebook = _chapter(args.notebook)
    names = [name for name, _ in args.param]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ParameterError(f"parameter {repeated[0]!r} is given more than once with -p; give each parameter once")
    overrides = dict(parse_override(name, value) for name, value in args.param)
    effective = effective_parameters(notebook, args.profile, overrides)  # fail fast, before starting a kernel
    if "device" in effective:
        try:
            resolve_device(effective["device"])
        except ValueError as error:
            raise ParameterError(f"parameter 'device': {error}") from None
    try:
        outcome = run_one(notebook, args.profile, overrides, threads=args.threads, progress=True,
                          html=not args.no_html)
    except BookBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if outcome.status == "failed":
        print(outcome.error, file=sys.stderr)
        print(f"FAILED: {notebook.name} ({outcome.seconds:.0f} s)", file=sys.stderr)
        return 1
    print(f"executed {notebook.name} with profile {args.profile} in {outcome.seconds:.0f} s")
    print(f"notebook: {outcome.output}")
    print(f"results:  {outcome.results}")
    if outcome.page is not None:
        print(f"page:     {outcome.page}")
    return 0


def _chapter(given: Path) -> Path:
    """The notebook a ``run`` argument names: a path, or a chapter's name (``section2_1_algorithm``) in
    ``notebooks/``. Raises ParameterError listing the chapters when there is none."""
    if not given.name:
        raise ParameterError(f"no notebook given ({str(given)!r}); name a chapter, e.g. section2_1_algorithm")
    for candidate in (given, NOTEBOOKS / given, NOTEBOOKS / given.with_suffix(".py")):
        if candidate.is_file():
            return candidate.resolve()
    chapters = ", ".join(sorted(p.stem for p in NOTEBOOKS.glob("*.py")))
    raise ParameterError(f"no such notebook: {given}; the chapters (notebooks/<name>.py) are: {chapters}")


def _book(args: argparse.Namespace) -> int:
    from .runner import BookBuildError, build_html, execute_book, stage_book

    print(f"executing the book's notebooks (profile {args.profile}, {args.jobs} job(s)) ...", flush=True)
    outcomes = execute_book(args.profile, jobs=args.jobs, threads=args.threads, force=args.force,
                            log=lambda msg: print(msg, flush=True))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(o.notebook for o in failed)}; the last good outputs "
              f"are kept; failed notebooks are in _build/failed/{args.profile}/", file=sys.stderr)
        return 1
    if args.no_build:
        return 0
    stage = stage_book(args.profile, outcomes)
    print(f"building the HTML ({args.profile} profile) with Jupyter Book", flush=True)
    try:
        out = build_html(args.profile, stage, strict=not args.no_strict)
    except BookBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"book built: {out / 'index.html'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .runner import book_notebooks

    for nb in book_notebooks():
        effective_parameters(nb, args.profile)
    print(f"profile {args.profile}: parameters of {len(book_notebooks())} notebooks are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
