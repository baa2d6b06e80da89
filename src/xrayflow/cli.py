"""Command line: ``xrayflow <stage> ...`` and ``xrayflow info FILE``.

Stages are discovered, not hard-wired: a stage ``X`` is listed when the module
``xrayflow.X.cli`` exists and provides ``add_arguments(parser)`` and ``run(args) -> int``.
Options every stage gets (added here when the stage did not add them itself):
``--config FILE``, ``--set KEY=VALUE`` (repeatable, ``args.overrides``) and ``--out PATH``;
a stage module turns some off with ``COMMON_ARGUMENTS`` (keyword arguments of
:func:`add_common_arguments`, e.g. ``{"config": False}``).

Errors of the user's making (:class:`~xrayflow.errors.XrayflowError`: ConfigError,
DataError, PhysicsError, OutputError, ResourceError, BackendError; and OSError from files
that cannot be read or written) are printed as one line on stderr,
``xrayflow <stage>: error: <message>``, with exit status 2 and no traceback. Set
``XRAYFLOW_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Sequence

from xrayflow import __version__
from xrayflow.errors import XrayflowError
from xrayflow.io.info import describe

STAGES: dict[str, str] = {
    "simulate": "simulate an X-ray experiment of a registered modality from a config into a "
    "CXI file",
    "reconstruct": "reconstruct a sample from diffraction data by automatic differentiation",
    "train": "train a neural network on simulated data",
    "evaluate": "compare a reconstruction with ground truth or two half-datasets",
    "ingest": "turn detector files (NeXus/HDF5 master, external links, dark/flat, positions) "
    "into a CXI file",
    "export": "convert a reconstruction result for ptychodus/pty-chi, PtyPy, cohere or VTK",
}

EXIT_USER_ERROR = 2

log = logging.getLogger("xrayflow")


def available_stages() -> list[str]:
    """Stages whose ``xrayflow.<stage>.cli`` module exists (without importing it)."""
    found = []
    for name in STAGES:
        try:
            spec = importlib.util.find_spec(f"xrayflow.{name}.cli")
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            found.append(name)
    return found


def add_common_arguments(
    parser: argparse.ArgumentParser, config: bool = True, overrides: bool = True, out: bool = True
) -> None:
    """Add ``--config``, ``--set`` and ``--out`` unless the parser already has them."""
    have = set(parser._option_string_actions)  # argparse has no public API
    if config and "--config" not in have:
        parser.add_argument("--config", "-c", metavar="FILE", help="YAML configuration file")
    if overrides and "--set" not in have:
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value (dotted key, YAML value); repeatable",
        )
    if out and "--out" not in have:
        parser.add_argument("--out", "-o", metavar="PATH", help="output file")


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a data file (CXI diffraction data or any xrayflow HDF5 file)",
        description="Print modality, frames, shapes, energy, geometry, truth fields and "
        "provenance of a CXI file; for other HDF5 files, the tree of groups and datasets.",
    )
    p.add_argument("path", metavar="FILE", help="CXI/HDF5 file")
    p.add_argument("--provenance", action="store_true", help="also print the stored config")
    p.set_defaults(_run=_run_info)


def _run_info(args) -> int:
    print(describe(args.path, show_config=args.provenance))
    return 0


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. Only the ``selected`` stage's module is imported (so a broken or
    slow-to-import stage does not affect the others); ``None`` imports none of them."""
    parser = argparse.ArgumentParser(
        prog="xrayflow",
        description="X-ray imaging pipeline: simulate, reconstruct, train, evaluate.",
        epilog="Run 'xrayflow <command> --help' for the options of a command. "
        "Errors in inputs exit with status 2.",
    )
    parser.add_argument("--version", action="version", version=f"xrayflow {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for name in available_stages():
        help_text = STAGES[name]
        if name != selected:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(f"xrayflow.{name}.cli")
        p = sub.add_parser(
            name,
            help=help_text,
            description=plain_text(mod.__doc__ or help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        add_common_arguments(p, **getattr(mod, "COMMON_ARGUMENTS", {}))
        p.set_defaults(_run=mod.run)
    _add_info(sub)
    return parser


#: Sphinx cross-references ``:role:`~target```, ``:role:`text <target>```, ``:role:`target```.
_ROLE = re.compile(r":[a-z]+:`~?(?:[^`<]*<)?([^`>]+)>?`")


def plain_text(doc: str) -> str:
    """A docstring as ``--help`` shows it: Sphinx roles reduced to the last two names of
    their target (``:mod:`xrayflow.solvers.gradient``` -> solvers.gradient), literal quotes
    dropped."""
    return _ROLE.sub(lambda m: ".".join(m.group(1).lstrip(".").split(".")[-2:]), doc).replace(
        "``", ""
    )


def _command(argv: Sequence[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def _prog(argv: Sequence[str]) -> str:
    for a in argv:
        if not a.startswith("-"):
            return f"xrayflow {a}"
    return "xrayflow"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 input error, 1 unexpected failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog(argv)
    debug = bool(os.environ.get("XRAYFLOW_DEBUG"))
    try:
        parser = build_parser(_command(argv))
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        )
        if not hasattr(args, "overrides"):
            args.overrides = []
        args.set = getattr(args, "set", None) or args.overrides
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return EXIT_USER_ERROR
        rc = args._run(args)
        return 0 if rc is None else int(rc)
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USER_ERROR)
    except BrokenPipeError:  # e.g. `xrayflow info F | head`
        try:
            sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        except OSError:
            pass
        return 0
    except (XrayflowError, OSError) as exc:  # OSError: files unreadable/unwritable, disk full
        if debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        if debug:
            raise
        print(
            f"{prog}: error: out of memory (the memory estimate did not foresee this "
            "allocation; reduce the sizes or set a lower max_memory_gb)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return " ".join(msg.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
