"""Root's files in one read and one upload (kono/root_files.py), checked with the real stat, sha256sum
and tar, without a host."""

import os
import subprocess
import tarfile

import pytest

from kono import commands
from kono.root_files import PLAIN_PATH, files_archive, parse_files_state, stale_files, wanted_state

BANNER = "Authorised use only.\n"


def test_the_state_read_gives_mode_owner_and_digest_of_the_files_that_are_there(tmp_path):
    there = tmp_path / "issue"
    there.write_text(BANNER)
    there.chmod(0o640)
    output = subprocess.run(["sh", "-c", commands.files_state([str(there), str(tmp_path / "missing")])],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    state = parse_files_state(output)
    assert state == {str(there): wanted_state(BANNER, "0640").replace(" 0 0 ", f" {os.getuid()} {os.getgid()} ")}


def test_only_files_whose_content_mode_or_owner_differ_are_stale():
    files = {"/etc/issue": BANNER, "/etc/issue.net": BANNER, "/etc/kono/new": "x\n", "/etc/other": "y\n"}
    current = {"/etc/issue": wanted_state(BANNER, "0644"),
               "/etc/issue.net": wanted_state(BANNER, "0600"),
               "/etc/other": wanted_state("y\n", "0644").replace(" 0 0 ", " 1000 0 ")}
    assert stale_files(files, "0644", current) == {"/etc/issue.net": BANNER, "/etc/kono/new": "x\n",
                                                   "/etc/other": "y\n"}
    assert stale_files({"/etc/issue": BANNER}, "0644", current) == {}


def test_the_archive_holds_each_file_at_its_path_owned_by_root_with_the_mode(tmp_path):
    archive = tmp_path / "files.tar"
    archive.write_bytes(files_archive({"/etc/kono/firewall.nft": "table inet kono {}\n", "/etc/issue": BANNER},
                                      "0644"))
    with tarfile.open(archive) as tar:
        entries = {entry.name: entry for entry in tar.getmembers()}
        assert sorted(entries) == ["etc/issue.kono-new", "etc/kono/firewall.nft.kono-new"]
        assert all((e.uid, e.gid, e.uname, e.mode, e.isfile()) == (0, 0, "root", 0o644, True)
                   for e in entries.values())
        assert tar.extractfile("etc/issue.kono-new").read() == BANNER.encode()


def test_unpacking_renames_each_file_over_the_old_one_makes_folders_and_deletes_the_archive(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/issue").write_text("old\n")
    with open(root / "etc/issue") as reader:  # a reader of the old file as it is replaced
        old_inode = (root / "etc/issue").stat().st_ino
        files = {"/etc/issue": BANNER, "/etc/kono/firewall.nft": "rules\n"}
        archive = tmp_path / "files.tar"
        archive.write_bytes(files_archive(files, "0640"))
        subprocess.run(["sh", "-c", commands.unpack_as_root(str(archive), sorted(files), str(root))], check=True)
        assert reader.read() == "old\n"  # never written in place: a new file took the name
    assert (root / "etc/issue").read_text() == BANNER and (root / "etc/issue").stat().st_ino != old_inode
    assert (root / "etc/kono/firewall.nft").stat().st_mode & 0o777 == 0o640
    assert not archive.exists()
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["firewall.nft", "issue"]  # nothing staged left


def test_a_broken_archive_fails_the_command_and_leaves_neither_it_nor_a_staged_file(tmp_path):
    archive = tmp_path / "files.tar"
    archive.write_bytes(files_archive({"/etc/issue": BANNER}, "0644")[:700])  # cut short inside the file
    done = subprocess.run(["sh", "-c", commands.unpack_as_root(str(archive), ["/etc/issue"], str(tmp_path))],
                          capture_output=True)
    assert done.returncode != 0
    assert not archive.exists()
    assert not (tmp_path / "etc/issue").exists() and not (tmp_path / "etc/issue.kono-new").exists()


@pytest.mark.parametrize("path", ["etc/issue", "/etc/my issue", "/etc/$(reboot)"])
def test_paths_the_state_lines_cannot_carry_are_refused(path):
    assert not PLAIN_PATH.match(path)
