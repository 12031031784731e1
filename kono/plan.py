"""What a plan says differs from the declared state: the drift check's findings.

Operations call ``drift(reason)`` while planning; ``python -m kono.cli.drift`` runs the deploy as a
plan (``--dry``) and collects the lines marked ``MARK``.

Example::

    drift("compose.yaml differs from what is declared")
"""

from __future__ import annotations

from pyinfra import host, logger

MARK = "drift: "


def drift(reason: str) -> None:
    """Say, when planning, what differs from the declared state. Quiet while executing."""
    if not host.state.is_executing:
        logger.warning(f"{host.print_prefix}{MARK}{reason}")
