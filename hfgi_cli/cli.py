"""The `hfgi` command line: argument parsing and reporting only; the work lives in the library."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Edit faces in photos and videos with HFGI (High-Fidelity GAN Inversion, CVPR 2022).",
)
weights_app = typer.Typer(no_args_is_help=True, help="Get, find and check the model files.")
app.add_typer(weights_app, name="weights")


def main() -> None:
    app()
