"""The ``nemic`` command line.

Each family of commands lives in its own module (``nemic.cli.<name>``) that defines a ``typer.Typer`` called
``app``; :data:`SUBCOMMANDS` lists them. Command modules import only Typer at their top and load the numerical
stack inside the command, so ``nemic --help`` and every ``--help`` answer in well under a second.

One error boundary (:func:`main`) turns every error a user can cause into one line on stderr (the trace only with
``--debug``): nemic's own errors (exit 2), a full disk, a missing or unreadable file, exhausted memory, a corrupt
file, and Ctrl-C (exit 130). Runs write through :mod:`nemic.io.runs`, so a failed run leaves earlier results as
they were.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import traceback

import typer

from nemic.errors import NemicError

app = typer.Typer(
    name="nemic",
    help="Hybrid, differentiable Earth-system models of intermediate complexity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no stray <bool> tags on flags
)

#: set by ``--debug``: print the full trace of an error instead of one line
DEBUG = {"on": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full trace of an error."),
    coordinator: str = typer.Option(None, "--coordinator", help="HOST:PORT of process 0 of a multi-process run."),
    num_processes: int = typer.Option(None, "--num-processes", help="Number of processes (hosts) of the run."),
    process_id: int = typer.Option(None, "--process-id", help="This process's rank, 0 .. N-1."),
    distributed: bool = typer.Option(False, "--distributed",
                                     help="Read the processes from the launcher (Slurm, Open MPI, JAX_* env)."),
    timeout: float = typer.Option(60.0, "--coordinator-timeout", help="Seconds to wait for the coordinator."),
) -> None:
    """Hybrid, differentiable Earth-system models of intermediate complexity."""
    DEBUG["on"] = debug
    if distributed or coordinator is not None or num_processes is not None or process_id is not None:
        from nemic.parallel.distributed import initialize  # jax loads only for multi-process runs

        initialize(coordinator, num_processes, process_id, timeout)


# (module, command name, help) for each group of subcommands
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("qg", "qg", "Two-layer QG model and the ocean subgrid benchmark"),
    ("minkowski", "minkowski", "Minkowski measures of precipitation fields"),
    ("ebm", "ebm", "Energy balance model: equilibrium, CO2, hysteresis, calibration"),
    ("nudging", "nudging", "Nudged runs and corrections learned from nudging tendencies"),
    ("l96", "l96", "Lorenz-96 recipes: stochastic closures and ensembles"),
    ("atmos", "atmos", "Global atmosphere: dinosaur's primitive equations, Held-Suarez, column physics"),
    ("downscale", "downscale", "Precipitation downscaling of OPERA radar rain (U-Nets, flow matching)"),
]


def _register() -> None:
    importlib.import_module("nemic.cli.quickstart")  # registers `nemic quickstart` on `app`
    for module, name, help_ in SUBCOMMANDS:
        sub = importlib.import_module(f"nemic.cli.{module}").app
        app.add_typer(sub, name=name, help=help_)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_error(e: BaseException) -> tuple[str, int]:
    """``(one-line message, exit status)`` for an error that reached the command line."""
    if isinstance(e, NemicError):
        return _one_line(e), 2
    if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e):
        return ("out of memory: the requested sizes (grid, steps, years, batch) need more memory than this "
                "machine has; reduce them"), 2
    if isinstance(e, OSError):
        where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
        if e.errno == errno.ENOSPC:
            return f"no space left on the device while writing{where}; earlier results are unchanged", 2
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied{where}", 2
        if e.errno == errno.ENOENT:
            return f"no such file or directory{where}", 2
        if e.errno == errno.EISDIR:
            return f"is a directory, expected a file{where}", 2
        return f"{e.strerror or type(e).__name__}{where}", 2
    if isinstance(e, (UnicodeDecodeError,)):
        return "a file that should be text is binary or not UTF-8", 2
    name = type(e).__name__
    return (f"internal error ({name}: {_one_line(e)[:300]}); run again with --debug for the trace and report "
            "it"), 1


def main() -> None:
    """Entry point of the ``nemic`` executable."""
    _register()
    debug = "--debug" in sys.argv[1:]
    try:
        result = app(standalone_mode=False)
        if result == 130:  # Typer turns Ctrl-C inside a command into Exit(130)
            raise KeyboardInterrupt
        if isinstance(result, int) and result:  # typer.Exit(code) returns its code here
            sys.exit(result)
    except typer.TyperException as e:  # usage errors: one line instead of Click's usage block
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare command group: its help, as --help shows it
            typer.echo(msg)
            sys.exit(0)
        typer.secho(f"error: {_one_line(msg)} (see --help)", fg=typer.colors.RED, err=True)
        sys.exit(getattr(e, "exit_code", 2) or 2)
    except KeyboardInterrupt:
        typer.secho("interrupted: results already in place are unchanged; a rerun resumes from its checkpoints",
                    fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001  (the one boundary of the command line)
        if debug or os.environ.get("NEMIC_DEBUG"):
            traceback.print_exc()
        msg, status = describe_error(e)
        typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
        sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    main()
