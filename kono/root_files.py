"""Whole files and folder modes owned by root, kept in one read and at most one upload per operation.

pyinfra's ``files.put`` costs three fact commands and an upload per file (about 0.35 s each on a
fresh host); bootstrap writes a dozen small files, so one operation keeps a group of them: one
command reads every file's owner, mode and digest, and the files that differ travel as one tar
archive that root unpacks beside them and renames into place. A group changes as one, so a service
that must reload on a file's change gets a group of its own. Never for a secret: ``--diff`` shows
what changes, as ``files.put`` does.

Example::

    banners = root_files(name="Login banners", files={"/etc/issue": BANNER, "/etc/issue.net": BANNER},
                         _sudo=True)
    private_paths(name="cron folders private", dirs=("/etc/cron.d",), files={"/etc/crontab": "0600"},
                  _sudo=True)
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time

from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations.util.files import generate_color_diff

from kono import commands

PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")  # what the state lines can carry unquoted


class RootFiles(FactBase):
    """{path: "MODE UID GID SHA256"} for the given paths that are files."""

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, paths: tuple[str, ...]) -> str:
        return commands.files_state(list(paths))

    def process(self, output: list[str]) -> dict[str, str]:
        return parse_files_state(output)


def parse_files_state(output: list[str]) -> dict[str, str]:
    stats, digests = {}, {}
    for line in output:
        kind, _, rest = line.partition(" ")
        if kind == "stat":
            mode, uid, gid, path = rest.split(" ", 3)
            stats[path] = f"{mode.zfill(4)} {uid} {gid}"
        elif kind == "sha256":
            digest, _, path = rest.partition("  ")
            digests[path] = digest
    return {path: f"{stats[path]} {digests[path]}" for path in stats if path in digests}


def wanted_state(content: str, mode: str) -> str:
    return f"{mode} 0 0 {hashlib.sha256(content.encode()).hexdigest()}"


def stale_files(files: dict[str, str], mode: str, current: dict[str, str]) -> dict[str, str]:
    """The files whose content, mode or owner (root) differ from what is on the host."""
    return {path: content for path, content in files.items() if current.get(path) != wanted_state(content, mode)}


def files_archive(files: dict[str, str], mode: str) -> bytes:
    """A tar archive of whole files, each at its absolute path plus ``commands.STAGED_SUFFIX`` (the
    unpacking renames it into place), owned by root with ``mode``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for path, content in sorted(files.items()):
            data = content.encode()
            entry = tarfile.TarInfo(path.lstrip("/") + commands.STAGED_SUFFIX)
            entry.size, entry.mode, entry.mtime = len(data), int(mode, 8), int(time.time())
            entry.uid, entry.gid, entry.uname, entry.gname = 0, 0, "root", "root"
            archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def show_diff(stale: dict[str, str], current: dict[str, str]) -> None:
    """What ``--diff`` shows for each file that changes, as pyinfra's ``files.put`` does."""
    for path, content in sorted(stale.items()):
        old = [line + "\n" for line in host.get_fact(FileContents, path=path) or []] if path in current else []
        host.log(f"Will {'modify' if path in current else 'create'} {path}", logger.info)
        for line in generate_color_diff(old, content.splitlines(keepends=True)):
            logger.info("  %s", line)
        logger.info("")


@operation()
def root_files(files: dict[str, str], mode: str = "0644"):
    """
    Keep whole files owned by root with exactly this content and mode; missing folders are made.

    + files: {absolute path: content}, paths of letters, digits and ``._/-`` only
    + mode: every file's mode, octal

    **Example:**

    .. code:: python

        root_files(name="Login banners", files={"/etc/issue": "Authorised use only.\\n"}, _sudo=True)
    """
    odd = [path for path in files if not PLAIN_PATH.match(path)]
    if odd:
        raise ValueError(f"root_files: expected absolute paths of letters, digits and ._/- only, got {odd}")
    current = host.get_fact(RootFiles, paths=tuple(sorted(files)))
    stale = stale_files(files, mode, current)
    if not stale:
        host.noop(f"{', '.join(sorted(files))} up to date")
        return
    if host.state.config.DIFF:
        show_diff(stale, current)
    archive = host.get_temp_filename("kono-root-files " + " ".join(sorted(stale)))
    # Uploaded as the SSH user into its temporary file; root unpacks it (keeping owner and mode).
    yield FileUploadCommand(io.BytesIO(files_archive(stale, mode)), archive, _sudo=False)
    yield commands.unpack_as_root(archive, sorted(stale))


class PathModes(FactBase):
    """{path: octal mode} for the paths that exist."""

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, paths: tuple[str, ...]) -> str:
        return commands.path_modes(list(paths))

    def process(self, output: list[str]) -> dict[str, str]:
        return {path: mode.zfill(4) for path, _, mode in (line.rpartition(" ") for line in output) if path}


@operation()
def private_paths(dirs: tuple[str, ...], files: dict[str, str]):
    """
    Folders that are 0700 (made if missing: a package installed in this very run may bring them,
    and dpkg keeps an existing folder's mode) and files that have a mode of their own when they exist.

    + dirs: folders, 0700
    + files: {path: octal mode}, left alone when missing

    **Example:**

    .. code:: python

        private_paths(dirs=("/etc/cron.d",), files={"/etc/crontab": "0600"}, _sudo=True)
    """
    modes = host.get_fact(PathModes, paths=(*dirs, *files))
    missing = [path for path in dirs if path not in modes]
    wrong = {path: mode for path, mode in {**{d: "0700" for d in dirs}, **files}.items()
             if path in modes and modes[path] != mode}
    if not missing and not wrong:
        host.noop("modes are as they should be")
        return
    if missing:
        yield commands.make_private_dirs(missing)
    for mode in sorted(set(wrong.values())):
        yield commands.chmod(mode, *(path for path, wanted in wrong.items() if wanted == mode))
