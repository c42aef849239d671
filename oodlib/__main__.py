"""Command line: ``python -m oodlib {run,book,validate} ...``.

    python -m oodlib run notebooks/section2_1_algorithm.py --profile default -p eps 5 -p steps 200
    python -m oodlib book --profile default --jobs 2
    python -m oodlib validate --profile paper
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .params import PROFILES, ParameterError, effective_parameters, parse_override


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m oodlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="re-execute one chapter with new parameters into runs/ (never the book's)")
    run.add_argument("notebook", type=Path)
    run.add_argument("--profile", default="default")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter; VALUE is read as YAML with YAML 1.2 numbers (5, 1e-3, [noise, ct], "
                          "true); the profile is set with --profile only")
    run.add_argument("--threads", type=int, default=None, help="CPU threads for the kernel (default: torch's)")
    book = sub.add_parser("book", help="execute stale notebooks of a profile, then build the HTML book")
    book.add_argument("--profile", default="default")
    book.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                      help="notebooks executed in parallel (default: 2 or the number of CPUs)")
    book.add_argument("--threads", type=int, default=1, help="CPU threads per notebook kernel (default 1)")
    book.add_argument("--force", action="store_true", help="re-execute every notebook")
    book.add_argument("--no-build", action="store_true", help="execute only; do not run Jupyter Book")
    book.add_argument("--no-strict", action="store_true", help="do not treat Sphinx warnings as errors")
    validate = sub.add_parser("validate", help="check a profile's parameters for every notebook")
    validate.add_argument("--profile", default="default")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.profile not in PROFILES:
            raise ParameterError(f"unknown profile {args.profile!r}; valid choices: {', '.join(PROFILES)}")
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
    from .runner import run_one

    notebook = args.notebook.resolve()
    if not notebook.exists():
        raise ParameterError(f"no such notebook: {args.notebook}")
    overrides = dict(parse_override(name, value) for name, value in args.param)
    effective_parameters(notebook, args.profile, overrides)  # fail fast, before starting a kernel
    outcome = run_one(notebook, args.profile, overrides, threads=args.threads)
    if outcome.status == "failed":
        print(outcome.error, file=sys.stderr)
        print(f"FAILED: {notebook.name} ({outcome.seconds:.0f} s)", file=sys.stderr)
        return 1
    print(f"executed {notebook.name} with profile {args.profile} in {outcome.seconds:.0f} s")
    print(f"notebook: {outcome.output}")
    print(f"results:  {outcome.results}")
    return 0


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
