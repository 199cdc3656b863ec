"""Helpers to test the command line in-process, as a user meets it (used by nemic's own tests).

:func:`invoke` runs ``nemic ARGS`` with Typer's ``CliRunner`` and returns what the one error boundary of
:func:`nemic.cli.main` would print; :func:`snapshot` fingerprints a results directory so that a test can show a
failed run left it byte for byte (and mode for mode) as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import typer
from typer.testing import CliRunner

from nemic.cli import _register, app, describe_error


def root_app() -> typer.Typer:
    """The root ``nemic`` app with every command registered, as ``nemic.cli.main`` builds it."""
    if not app.registered_groups:
        _register()
    return app


def invoke(cli_app: typer.Typer, args: Sequence[Any]) -> tuple[int, list[str]]:
    """Run ``nemic ARGS`` in-process: ``(exit status, the error lines a user would see)``."""
    r = CliRunner().invoke(cli_app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        msg, status = describe_error(r.exception)
        return status, [f"error: {msg}"]
    return r.exit_code, [ln for ln in r.output.splitlines() if ln.strip().lower().startswith("error")]


def snapshot(path: Path) -> dict[str, str]:
    """sha256 and mode of every file under ``path``, by relative path."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() + f":{p.stat().st_mode:o}"
            for p in sorted(Path(path).rglob("*")) if p.is_file()}
