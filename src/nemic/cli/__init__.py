"""The ``nemic`` command line.

Each family of commands lives in its own module (``nemic.cli.<name>``) that defines a ``typer.Typer`` called
``app``; :data:`SUBCOMMANDS` lists them. Errors raised deliberately by nemic (:class:`~nemic.core.errors.NemicError`)
are printed as one line and exit with status 2; nothing already written is removed.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="nemic",
    help="Hybrid, differentiable Earth-system models of intermediate complexity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """Hybrid, differentiable Earth-system models of intermediate complexity."""


# (module, command name, help) for each group of subcommands
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("qg", "qg", "Two-layer QG model and the ocean subgrid benchmark"),
    ("minkowski", "minkowski", "Minkowski measures of precipitation fields"),
    ("ebm", "ebm", "Energy balance model: equilibrium, CO2, hysteresis, calibration"),
    ("nudging", "nudging", "Nudged runs and corrections learned from nudging tendencies"),
]


def _register() -> None:
    from nemic.cli import quickstart  # noqa: F401  (registers `nemic quickstart` on `app`)

    for module, name, help_ in SUBCOMMANDS:
        sub = importlib.import_module(f"nemic.cli.{module}").app
        app.add_typer(sub, name=name, help=help_)


def main() -> None:
    """Entry point of the ``nemic`` executable."""
    from nemic.core.errors import NemicError

    _register()
    try:
        app()
    except NemicError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
