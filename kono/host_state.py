"""What a deploy reads from a host, in as few remote commands as possible.

Each read is a pyinfra fact class and its arguments (its ``command`` and ``process``). A deploy
declares the reads it will need (``declare``, from ``begin_deploy``); the first one asked for runs
all of them as one command, and the deploy lock takes that command along: a no-op deploy of a host
runs two commands in all (lock and reads, then the audit record), whatever it reads.
An operation that changed something on the host makes every later read fresh again (one command
for all of them), so no decision is made on what the host looked like before a change.

Unlike ``host.get_fact``, a read never prints its output (not even at ``-vvv``): one of them is
the maintainers' password hash file.

Example::

    declare([(ConfigTree, {"directory": "/srv/kono"}), (StackState, {...})])
    tree = read(ConfigTree, directory="/srv/kono")  # with the others, in one command
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.api.exceptions import OperationError

from kono import commands

Read = tuple[type[FactBase], dict[str, Any]]

_DECLARED: dict[str, tuple[Read, ...]] = {}  # host name -> the reads its deploy needs
_READ: dict[str, tuple[tuple, dict]] = {}  # host name -> (freshness, {read key: result})


def key(cls: type[FactBase], kwargs: dict[str, Any]) -> tuple:
    return cls.__name__, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


def split_sections(lines: list[str], count: int) -> tuple[list[str], list[list[str]]]:
    """(lines before the first section, each section's lines) from ``commands.sections`` output; no
    sections when the command before them exited first."""
    head: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line == commands.section_marker(len(sections)):
            sections.append([])
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    if sections and len(sections) != count:
        raise OperationError(f"read {len(sections)} of {count} sections of the host's state")
    return head, sections


def declare(reads: list[Read]) -> None:
    """The reads this host's deploy will make: the first of them runs them all."""
    _DECLARED[host.name] = tuple(reads)


def _freshness() -> tuple[bool, int]:
    # Planning changes nothing; while executing, the count of this host's operations that changed it.
    changed = sum(1 for data in host.state.ops.get(host, {}).values()
                  if data.operation_meta.is_complete() and data.operation_meta.did_change())
    return host.state.is_executing, changed


def run(command: str) -> list[str]:
    """Run a command on the host; its output is returned, never printed (``-vv`` shows the command)."""
    ok, output = host.run_shell_command(command, print_input=host.state.print_input)
    if not ok:
        raise OperationError(f"{command.split(' ', 1)[0]} failed: {' '.join(output.stderr_lines)[-500:]}")
    return list(output.stdout_lines)


def run_with_reads(command: str) -> list[str]:
    """Run ``command``, then (in the same remote command, unless it exits) every declared read; keep
    the reads' results and return ``command``'s own output."""
    reads = _DECLARED.get(host.name, ())
    if not reads:
        return run(command)
    sections = [cls().command(**kwargs) for cls, kwargs in reads]
    head, outputs = split_sections(run(f"{command}; {commands.sections(sections)}" if command
                                        else commands.sections(sections)), len(reads))
    if not outputs:
        return head  # the command exited before the reads (a lock another deploy holds)
    _READ[host.name] = (_freshness(), {key(cls, kwargs): _result(cls, output)
                                       for (cls, kwargs), output in zip(reads, outputs)})
    return head


def _result(cls: type[FactBase], lines: list[str]) -> Any:
    return cls().process(lines) if lines else cls.default()  # as host.get_fact: no output, the default


def read(cls: type[FactBase], **kwargs: Any) -> Any:
    """A fact's result for this host, as fresh as the last change: from the declared reads when it
    is one of them (all of them re-read in one command when stale), else by its own command."""
    wanted = key(cls, kwargs)
    freshness, results = _READ.get(host.name, (None, {}))
    if freshness == _freshness() and wanted in results:
        return results[wanted]
    if any(key(c, k) == wanted for c, k in _DECLARED.get(host.name, ())):
        run_with_reads("")
        return _READ[host.name][1][wanted]
    return _result(cls, run(cls().command(**kwargs)))
