"""Every command builder: its exact text, and that the shell accepts its syntax (``sh -n``)."""

import contextlib
import datetime
import hashlib
import json
import shlex
import subprocess
import time

import pytest

from kono import commands, host_state
from kono.services import SERVICES, secrets_of
from kono.stack import FileDigests, StackState, service_secret_paths

SECRET_PATHS = {"api": ["config/production/db_api_password", "config/production/api_key"], "nginx": []}


def syntax_ok(command: str, shell: str = "sh") -> bool:
    return subprocess.run([shell, "-n", "-c", command], capture_output=True).returncode == 0


def exec_in(service: str, script: str, env: str = "") -> str:
    """What in_service builds for project "kono" (its text once; its behaviour: the tests below)."""
    return ("{ container=$({ docker ps -q --filter label=com.docker.compose.project=kono "
            f"--filter label=com.docker.compose.service={service} --filter status=running; "
            "docker ps -q --filter label=com.docker.stack.namespace=kono "
            f"--filter label=com.docker.swarm.service.name=kono_{service} --filter status=running; }} | head -n 1); "
            f"if [ -n \"$container\" ]; then docker exec -i{env} \"$container\" sh -c {script}; "
            f"else printf '%s\\n' '{service}: no running container of it on this host' >&2; false; fi; }}")


SSHD_REREADS_HOST_KEYS = exec_in("maintainer", "'kill -HUP \"$(cat /run/sshd.pid)\"'")


EXPECTED = {
    "file_digests": (
        commands.file_digests("/srv/kono", ["compose.yaml", "nginx/default.conf"]),
        "cd /srv/kono && set --; for f in compose.yaml nginx/default.conf; do if [ -f \"$f\" ]; then "
        "set -- \"$@\" \"$f\"; else echo \"- $f\"; fi; done; [ $# -eq 0 ] || sha256sum -- \"$@\""),
    "file_text": (commands.file_text("/srv/kono/config/production/x"),
                  "cat /srv/kono/config/production/x 2>/dev/null || true"),
    "sections": (commands.sections(["cd /srv/kono || exit 0; echo a", "echo b"]),
                 "echo '--- kono read 0'; ( cd /srv/kono || exit 0; echo a ); echo '--- kono read 1'; ( echo b ); true"),
    "make_dir": (commands.make_dir("/srv/kono/a b"), "mkdir -p '/srv/kono/a b'"),
    "make_dir with mode": (commands.make_dir("/srv/kono/config", "0700"), "mkdir -m 0700 /srv/kono/config"),
    "chmod": (commands.chmod("0600", "/srv/kono/config/x"), "chmod 0600 /srv/kono/config/x"),
    "chmod several": (commands.chmod("0700", "/etc/cron.d", "/etc/cron daily"), "chmod 0700 /etc/cron.d '/etc/cron daily'"),
    "files_state": (commands.files_state(["/etc/issue", "/etc/issue.net"]),
                    "{ stat -c 'stat %a %u %g %n' /etc/issue /etc/issue.net; sha256sum /etc/issue /etc/issue.net "
                    "| sed 's/^/sha256 /'; } 2>/dev/null; true"),
    "path_modes": (commands.path_modes(["/etc/crontab", "/etc/cron.d"]),
                   "stat -c '%n %a' /etc/crontab /etc/cron.d 2>/dev/null || true"),
    "unpack_as_root": (commands.unpack_as_root("/tmp/pyinfra-x", ["/etc/issue", "/etc/kono/a.nft"]),
                       "tar -x --no-overwrite-dir -f /tmp/pyinfra-x -C / && mv -f /etc/issue.kono-new /etc/issue "
                       "&& mv -f /etc/kono/a.nft.kono-new /etc/kono/a.nft; unpacked=$?; rm -f /tmp/pyinfra-x; "
                       "[ $unpacked -eq 0 ] || rm -f /etc/issue.kono-new /etc/kono/a.nft.kono-new; exit $unpacked"),
    "make_private_dirs": (commands.make_private_dirs(["/etc/cron.d", "/etc/cron.daily"]),
                          "mkdir -p -m 0700 /etc/cron.d /etc/cron.daily"),
    "install_checked_sshd_config": (
        commands.install_checked_sshd_config("/etc/ssh/sshd_config.d/00-kono.conf.new",
                                             "/etc/ssh/sshd_config.d/00-kono.conf", ("admin",)),
        "set -e; if [ -e /etc/ssh/sshd_config.d/00-kono.conf ]; then cp -p /etc/ssh/sshd_config.d/00-kono.conf "
        "/etc/ssh/sshd_config.d/00-kono.conf.old; fi; mv /etc/ssh/sshd_config.d/00-kono.conf.new "
        "/etc/ssh/sshd_config.d/00-kono.conf; if sshd -t && t=$(sshd -T -C user=admin,host=localhost,addr=127.0.0.1) "
        "&& echo \"$t\" | grep -qx 'pubkeyauthentication yes' && echo \"$t\" | grep -qx 'allowusers admin'; then "
        "rm -f /etc/ssh/sshd_config.d/00-kono.conf.old; else if [ -e /etc/ssh/sshd_config.d/00-kono.conf.old ]; "
        "then mv /etc/ssh/sshd_config.d/00-kono.conf.old /etc/ssh/sshd_config.d/00-kono.conf; else rm -f "
        "/etc/ssh/sshd_config.d/00-kono.conf; fi; echo 'the new sshd configuration failed its check: kept the old "
        "one' >&2; exit 1; fi"),
    "replace_compose_file_if_valid": (
        commands.replace_compose_file_if_valid("/srv/kono"),
        "cd /srv/kono && if docker compose --project-directory . -f .kono/compose.yaml.new config --quiet; "
        "then chmod 0644 .kono/compose.yaml.new && mv .kono/compose.yaml.new compose.yaml; "
        "else rm -f .kono/compose.yaml.new; exit 1; fi"),
    "services_state": (
        commands.services_state("kono"),
        "printf 'containers '; if command -v curl >/dev/null; then curl --silent --fail --unix-socket "
        "/var/run/docker.sock --get --data-urlencode all=1 --data-urlencode 'filters={\"label\":"
        "[\"com.docker.compose.project=kono\",\"com.docker.compose.oneoff=False\"]}' "
        "http://docker/containers/json 2>/dev/null; else printf no-curl; fi; echo"),
    "stack_state": (
        commands.stack_state("/srv/kono", "kono", ("nginx",), SECRET_PATHS),
        "cd /srv/kono 2>/dev/null || exit 0; echo digest; find . \\( -path ./.kono -o -path ./.env -o -path "
        "./nginx \\) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum; "
        "printf 'applied '; cat .kono/applied 2>/dev/null || echo; sed 's/^/recorded /' .kono/services 2>/dev/null; "
        "{ printf 'secrets api '; cat config/production/db_api_password config/production/api_key | sha256sum; } "
        "2>/dev/null; printf 'containers '; if command -v curl >/dev/null; then curl --silent --fail --unix-socket "
        "/var/run/docker.sock --get --data-urlencode all=1 --data-urlencode 'filters={\"label\":"
        "[\"com.docker.compose.project=kono\",\"com.docker.compose.oneoff=False\"]}' "
        "http://docker/containers/json 2>/dev/null; else printf no-curl; fi; echo"),
    "record_services": (
        commands.record_services({"api": "c0ffee node:22-slim 5ca1ab"}),
        "{ s=$(sed -n 's/^KONO_SECRETS_API=//p' .env); echo \"api c0ffee node:22-slim 5ca1ab ${s:--}\"; } "
        "> .kono/services"),
    "start_first": (
        commands.start_first("api", 300, 30),
        "old=$(docker compose ps -q api | sort) && if ! docker compose up --detach --no-deps --no-recreate "
        "--scale api=2 --wait --wait-timeout 300 api; then docker compose ps -aq api | grep -vxF \"$old\" | "
        "xargs -r docker rm -f >/dev/null; echo 'api: the new container did not become healthy; the old one "
        "keeps serving' >&2; exit 1; fi && sleep 2 && echo \"$old\" | xargs -r docker stop --time 30 >/dev/null && "
        "echo \"$old\" | xargs -r docker rm >/dev/null"),
    "secrets_env": (
        commands.secrets_env(SECRET_PATHS),
        "{ echo KONO_SECRETS_API=$(cat config/production/db_api_password config/production/api_key "
        "| sha256sum | cut -c1-16); } > .env"),
    "config_tree": (
        commands.config_tree("/srv/kono"),
        "cd /srv/kono 2>/dev/null && find config -printf '%y %m %s %p\\n' 2>/dev/null || true"),
    "random_secret_into": (
        commands.random_secret_into("/srv/kono/config/dev/x", 32),
        "umask 077 && tr -dc A-Za-z0-9 </dev/urandom | head -c 32 > /srv/kono/config/dev/x"),
    "generate_secret": (
        commands.generate_secret("/srv/kono/config/dev/x", 32),
        "umask 077 && tr -dc A-Za-z0-9 </dev/urandom | head -c 32 > /srv/kono/config/dev/x.new && "
        "chmod 0600 /srv/kono/config/dev/x.new && mv /srv/kono/config/dev/x.new /srv/kono/config/dev/x"),
    "rename": (commands.rename("/a/x.rotating", "/a/x"), "mv /a/x.rotating /a/x"),
    "read_file": (commands.read_file("config/dev/x"), "cat config/dev/x"),
    "mysql_root": (
        commands.mysql_root("kono", "db_dev", "/run/db-secrets/dev_db_root_password", "-N"),
        exec_in("db_dev", "'MYSQL_PWD=$(cat /run/db-secrets/dev_db_root_password) exec mysql -uroot -N'")),
    "mysqldump": (
        commands.mysqldump("kono", "db_production", "/run/db-secrets/production_db_root_password", "kono"),
        exec_in("db_production", "'MYSQL_PWD=$(cat /run/db-secrets/production_db_root_password) "
                "exec mysqldump -uroot --single-transaction --routines --triggers --databases kono'")),
    "alter_users": (
        commands.alter_users("/srv/kono/config/dev/db_root_password.rotating", "kono", "db_dev",
                             "/run/db-secrets/dev_db_root_password", ("root@%", "root@localhost")),
        "new=$(cat /srv/kono/config/dev/db_root_password.rotating) && printf \"SET SESSION sql_log_bin = 0; "
        "ALTER USER 'root'@'%%' "
        "IDENTIFIED BY '%s'; ALTER USER 'root'@'localhost' IDENTIFIED BY '%s'; \\n\" \"$new\" \"$new\" | "
        + exec_in("db_dev", "'MYSQL_PWD=$(cat /run/db-secrets/dev_db_root_password) exec mysql -uroot'")),
    "table_count": (
        commands.table_count("kono", "db_production", "/run/db-secrets/production_db_root_password", "kono"),
        "printf \"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'kono';\\n\" | "
        + exec_in("db_production", "'MYSQL_PWD=$(cat /run/db-secrets/production_db_root_password) exec mysql -uroot -N'")),
    "tar_out": (commands.tar_out("kono", "maintainer", "/srv/static"),
                exec_in("maintainer", "'tar -C /srv/static -cf - .'")),
    "tar_in": (commands.tar_in("kono", "maintainer", "/srv/static", "sudo"),
               exec_in("maintainer", "'tar -C /srv/static -xf - && chgrp -R sudo /srv/static'")),
    "stage_folder": (
        commands.stage_folder("/srv/kono", "nginx"),
        "cd /srv/kono && rm -rf .kono/staged/nginx .kono/staged/nginx.checked && mkdir -p .kono/staged/nginx && "
        "cp -a nginx/. .kono/staged/nginx/ 2>/dev/null; true"),
    "nginx_check": (
        commands.nginx_check("/srv/kono", "nginx", "nginx:1.27", "0123abcd"),
        "cd /srv/kono && mounts=''; tar -C .kono/staged/nginx -cf - . | docker run --rm -i --network none "
        "$mounts --entrypoint sh nginx:1.27 -c 'rm -rf /etc/nginx/conf.d/* && tar -C /etc/nginx/conf.d -xf - && "
        "nginx -t -q' && echo 0123abcd > .kono/staged/nginx.checked"),
    "nginx_check_with_tls_mounts": (
        commands.nginx_check("/srv/kono", "nginx", "nginx:1.27", "0123abcd",
                             mounts=(("./config/tls", "/etc/nginx/tls"), ("kono_certificates", "/x"))),
        "cd /srv/kono && mounts=''; if [ -d ./config/tls ]; then mounts=\"$mounts -v $PWD/config/tls:/etc/nginx/tls:ro\"; "
        "fi; if docker volume inspect kono_certificates >/dev/null 2>&1; then mounts=\"$mounts -v "
        "kono_certificates:/x:ro\"; fi; tar -C .kono/staged/nginx -cf - . | docker run --rm -i --network none "
        "$mounts --entrypoint sh nginx:1.27 -c 'rm -rf /etc/nginx/conf.d/* && tar -C /etc/nginx/conf.d -xf - && "
        "nginx -t -q' && echo 0123abcd > .kono/staged/nginx.checked"),
    "apply_folder": (
        commands.apply_folder("/srv/kono", "nginx", "0123abcd", "kono"),
        "cd /srv/kono && mkdir -p nginx && cp -a .kono/staged/nginx/. nginx/ && "
        "rm -rf .kono/staged/nginx .kono/staged/nginx.checked && "
        "for container in $(docker ps -q --filter label=com.docker.compose.project=kono "
        "--filter label=com.docker.compose.service=nginx --filter status=running; "
        "docker ps -q --filter label=com.docker.stack.namespace=kono --filter label=com.docker.swarm.service.name=kono_nginx "
        "--filter status=running); do docker exec \"$container\" nginx -s reload || exit 1; done && "
        "echo 0123abcd > .kono/reloaded.nginx"),
    "switch_staged_folders": (
        commands.switch_staged_folders({"nginx": "0123abcd"}),
        "if [ \"$(cat .kono/staged/nginx.checked 2>/dev/null)\" = 0123abcd ]; then docker compose build --quiet "
        "|| exit 1; fi; if [ \"$(cat .kono/staged/nginx.checked 2>/dev/null)\" = 0123abcd ]; then mkdir -p nginx && "
        "cp -a .kono/staged/nginx/. nginx/ && rm -rf .kono/staged/nginx .kono/staged/nginx.checked && "
        "echo 0123abcd > .kono/reloaded.nginx || exit 1; fi"),
    "served_certificate": (
        commands.served_certificate("kono"),
        exec_in("nginx", "'cat /etc/nginx/tls/certificate'") + " 2>/dev/null || true"),
    "served_certificate at a cluster's origin": (
        commands.served_certificate("kono", "origin"),
        exec_in("origin", "'cat /etc/nginx/tls/certificate'") + " 2>/dev/null || true"),
    "issue_certificate": (
        commands.issue_certificate("kono", "/kono/kono-acme.sh", "nginx", "/kono/kono-nginx.sh", "reload"),
        exec_in("acme", "'sh /kono/kono-acme.sh issue'") + " && " + exec_in("nginx", "'sh /kono/kono-nginx.sh reload'")),
    "issue_certificate on a cluster": (
        commands.issue_certificate("kono", "/kono/kono-acme.sh", "origin", "/kono/kono-origin.sh", "copy"),
        exec_in("acme", "'sh /kono/kono-acme.sh issue'") + " && " + exec_in("origin", "'sh /kono/kono-origin.sh copy'")),
    "fetch_certificate": (
        commands.fetch_certificate("kono", "/kono/kono-nginx.sh"),
        exec_in("nginx", "'sh /kono/kono-nginx.sh fetch'")),
    "last_backup": (
        commands.last_backup("kono", "/usr/local/lib/kono-backup.sh"),
        exec_in("backup", "'sh /usr/local/lib/kono-backup.sh last'") + " 2>/dev/null || true"),
    "restore_from_repository": (
        commands.restore_from_repository("kono", ("1a2b3c4d", "5e6f7a8b", "9c0d1e2f"), force=True,
                                         script="/usr/local/lib/kono-backup.sh"),
        exec_in("backup", "'sh /usr/local/lib/kono-backup.sh restore 1a2b3c4d 5e6f7a8b 9c0d1e2f'",
                " -e KONO_RESTORE_FORCE=yes") + " && " + SSHD_REREADS_HOST_KEYS),
    "restore_from_repository pinning the newer": (
        commands.restore_from_repository("kono", ("1a2b3c4d", "5e6f7a8b", "9c0d1e2f"), force=False,
                                         script="/usr/local/lib/kono-backup.sh", pin=("aa11bb22", "cc33dd44")),
        exec_in("backup", "'sh /usr/local/lib/kono-backup.sh restore 1a2b3c4d 5e6f7a8b 9c0d1e2f'",
                " -e 'KONO_RESTORE_KEEP=aa11bb22 cc33dd44'") + " && " + SSHD_REREADS_HOST_KEYS),
    "restore_from_repository with replay": (
        commands.restore_from_repository("kono", ("1a2b3c4d", "5e6f7a8b", "9c0d1e2f"), force=False,
                                         script="/usr/local/lib/kono-backup.sh",
                                         replay=("2026-12-02 14:05:00", ("aa11bb22", "cc33dd44"))),
        exec_in("backup", "'sh /usr/local/lib/kono-backup.sh restore 1a2b3c4d 5e6f7a8b 9c0d1e2f replay '\"'\"'"
                "2026-12-02 14:05:00'\"'\"' aa11bb22 cc33dd44'") + " && " + SSHD_REREADS_HOST_KEYS),
    "restore_from_repository replaying everything": (
        commands.restore_from_repository("kono", ("1a2b3c4d", "5e6f7a8b", "9c0d1e2f"), force=False,
                                         script="/usr/local/lib/kono-backup.sh", replay=("", ("aa11bb22",))),
        exec_in("backup", "'sh /usr/local/lib/kono-backup.sh restore 1a2b3c4d 5e6f7a8b 9c0d1e2f replay '\"'\"''\"'\"' "
                "aa11bb22'") + " && " + SSHD_REREADS_HOST_KEYS),
    "shipped_binlogs": (
        commands.shipped_binlogs("kono", "/usr/local/lib/kono-backup.sh"),
        exec_in("binlog", "'sh /usr/local/lib/kono-backup.sh shipped'") + " 2>/dev/null || true"),
    "fail": (commands.fail("x: expected 'y'"), "printf '%s\\n' 'x: expected '\"'\"'y'\"'\"'' >&2; exit 1"),
    "close_record": (
        commands.close_record({"result": "failed or interrupted"}),
        "sed 's/}$/, \"result\": \"failed or interrupted\"}/' .kono/deploy.pending >> .kono/audit.log"),
    "finish_record": (
        commands.finish_record("/srv/kono", {"changes": 2, "finished": "2026-11-25T13:00:00+00:00",
                                             "result": "success"}),
        "cd /srv/kono && sed 's/}$/, \"changes\": 2, \"finished\": \"2026-11-25T13:00:00+00:00\", "
        "\"result\": \"success\"}/' .kono/deploy.pending >> .kono/audit.log && rm -f .kono/deploy.pending && "
        "{ kill $(cat .kono/deploy.holder 2>/dev/null) 2>/dev/null; rm -f .kono/deploy.holder; }"),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_command_text_and_syntax(name):
    built, expected = EXPECTED[name]
    assert built == expected
    assert syntax_ok(built), built


def test_compose_up_validates_brings_up_and_records_the_digest():
    up = commands.compose_up("/srv/kono", 300, SECRET_PATHS, ("nginx",), records={"api": "c i v"})
    assert up.startswith("cd /srv/kono && { echo KONO_SECRETS_API=")
    assert "} > .env && docker compose config --quiet && digest=$(find . " in up
    assert ("docker compose up --detach --build --remove-orphans --wait --wait-timeout 300 "
            "&& mkdir -p .kono && echo \"$digest\" > .kono/applied && { s=$(sed") in up
    assert "-o -path ./nginx" in up
    assert up.endswith("> .kono/last-up-seconds")
    assert syntax_ok(up)


def test_compose_up_switches_a_folder_checked_for_a_new_container_right_before_up():
    up = commands.compose_up("/srv/kono", 300, SECRET_PATHS, ("nginx",), markers={"nginx": "0123abcd"})
    assert (f"started=$(date +%s.%N) && {{ {commands.switch_staged_folders({'nginx': '0123abcd'})}; }} && "
            "docker compose up --detach --build") in up
    assert syntax_ok(up)


def _switch(tmp_path, checked: str | None) -> tuple[str, str, bool, list[str]]:
    """Run switch_staged_folders in a project folder with a live and a staged nginx/ (``checked``: the
    digest the staged copy was checked with, None for none), docker a stand-in that logs its calls:
    (live file, marker, whether anything is still staged, docker's calls)."""
    project = tmp_path / "project"
    (project / "nginx").mkdir(parents=True)
    (project / "nginx/default.conf").write_text("old\n")
    staged = project / commands.STAGED_DIR / "nginx"
    staged.mkdir(parents=True)
    (staged / "default.conf").write_text("new\n")
    if checked is not None:
        (project / commands.checked_marker("nginx")).write_text(checked + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/docker.log\n")
    (bin_dir / "docker").chmod(0o755)
    proc = subprocess.run(["sh", "-c", commands.switch_staged_folders({"nginx": "0123abcd"})], cwd=project,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    marker = project / commands.reloaded_marker("nginx")
    calls = (tmp_path / "docker.log").read_text().splitlines() if (tmp_path / "docker.log").exists() else []
    return ((project / "nginx/default.conf").read_text(), marker.read_text() if marker.exists() else "",
            staged.exists(), calls)


def test_a_folder_checked_for_what_is_declared_now_is_switched_in_after_the_build(tmp_path):
    assert _switch(tmp_path, "0123abcd") == ("new\n", "0123abcd\n", False, ["compose build --quiet"])


@pytest.mark.parametrize("checked", [None, "ffff0000"], ids=["never checked", "checked for other settings"])
def test_a_folder_staged_by_an_earlier_run_is_never_switched_in(tmp_path, checked):
    # A run killed after staging (or whose check failed) left it: it is not what is declared now.
    assert _switch(tmp_path, checked) == ("old\n", "", True, [])


def test_compose_up_replaces_start_first_services_after_bringing_up_the_others():
    up = commands.compose_up("/srv/kono", 300, SECRET_PATHS, (), {"api": 30}, ("db_production", "nginx"))
    assert ("docker compose up --detach --build --remove-orphans --wait --wait-timeout 300 db_production nginx "
            f"&& {commands.start_first('api', 300, 30)} && mkdir -p .kono") in up
    assert syntax_ok(up)


def test_take_lock_holds_the_lock_for_the_session_and_closes_a_pending_record():
    record = '{"commit": "abc", "user": "o\'brien"}'
    lock = commands.take_lock("/srv/kono", 600, record)
    assert lock.startswith("cd /srv/kono && mkdir -p .kono && exec 9>>.kono/deploy.lock && "
                           "if ! flock -w 600 9; then echo \"locked $(cat .kono/deploy.owner 2>/dev/null)\"")
    assert f"session=$PPID; ( setsid sh -c {shlex.quote(commands.lock_holder())} sh \"$session\" " in lock
    assert f"if [ -s .kono/deploy.pending ]; then {commands.close_record({'result': 'failed or interrupted'})}; fi" in lock
    assert lock.endswith("> .kono/deploy.pending; echo taken")
    assert syntax_ok(lock)


def test_a_record_value_with_sed_specials_survives_the_edit(tmp_path):
    (tmp_path / ".kono").mkdir()
    (tmp_path / ".kono/deploy.pending").write_text('{"started": "x"}\n')
    fields = {"result": "a/b & c\\d"}
    subprocess.run(["sh", "-c", commands.finish_record(str(tmp_path), fields)], check=True)
    import json
    assert json.loads((tmp_path / ".kono/audit.log").read_text()) == {"started": "x", **fields}


def test_secrets_env_writes_one_digest_per_service_with_secrets(tmp_path):
    for secret in {s for service in SERVICES for s in secrets_of(service.name)}:
        (tmp_path / secret.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / secret.path).write_text(secret.key)
    subprocess.run(["sh", "-c", commands.in_dir(str(tmp_path), commands.secrets_env(service_secret_paths()))],
                   check=True)
    names = [line.split("=")[0] for line in (tmp_path / ".env").read_text().splitlines()]
    assert names == [commands.env_name(s.name) for s in SERVICES if secrets_of(s.name)]
    # What a deploy reads back is what .env holds: else every deploy would replace every container.
    written = dict(line.split("=") for line in (tmp_path / ".env").read_text().splitlines())
    read_back = StackState().process(subprocess.run(
        ["sh", "-c", commands.in_dir(str(tmp_path), commands.secrets_now(service_secret_paths()))],
        capture_output=True, text=True, check=True).stdout.splitlines())["secrets"]
    assert {commands.env_name(name): digest for name, digest in read_back.items()} == written


def test_commands_never_take_a_secret_value():
    """Builders take paths, names and numbers; a value would end up on a command line."""
    import inspect
    for name, function in inspect.getmembers(commands, inspect.isfunction):
        if function.__module__ == "kono.commands":
            assert not {"value", "password", "secret"} & set(inspect.signature(function).parameters), name


FAKE_SSHD = """#!/bin/sh
# sshd -t exits with $FAKE_CHECK; sshd -T prints $FAKE_EFFECTIVE (the effective configuration).
if [ "$1" = "-t" ]; then exit "$FAKE_CHECK"; fi
printf '%b' "$FAKE_EFFECTIVE"
"""


@pytest.mark.parametrize("check, effective, installed", [
    (0, "pubkeyauthentication yes\\nallowusers admin\\nallowusers kono\\n", True),
    (1, "pubkeyauthentication yes\\nallowusers admin\\nallowusers kono\\n", False),  # sshd -t rejects it
    (0, "pubkeyauthentication yes\\nallowusers admin\\n", False),  # kono would be locked out
    (0, "pubkeyauthentication no\\nallowusers admin\\nallowusers kono\\n", False),
])
@pytest.mark.parametrize("had_one", [True, False])
def test_a_new_sshd_config_goes_in_only_if_sshd_accepts_it_and_keeps_both_users(tmp_path, check, effective,
                                                                                installed, had_one):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sshd").write_text(FAKE_SSHD)
    (bin_dir / "sshd").chmod(0o755)
    dest, staged = tmp_path / "00-kono.conf", tmp_path / "00-kono.conf.new"
    if had_one:
        dest.write_text("old\n")
    staged.write_text("new\n")
    run = subprocess.run(["sh", "-c", commands.install_checked_sshd_config(str(staged), str(dest), ("admin", "kono"))],
                         capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_CHECK": str(check), "FAKE_EFFECTIVE": effective})
    assert (run.returncode == 0) == installed, run.stderr
    if installed:
        assert dest.read_text() == "new\n"
    elif had_one:
        assert dest.read_text() == "old\n" and "kept the old one" in run.stderr
    else:
        assert not dest.exists()
    assert not staged.exists() and not (tmp_path / "00-kono.conf.old").exists()


def test_file_digests_of_present_and_missing_files(tmp_path):
    (tmp_path / "compose.yaml").write_text("name: kono\n")
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "a b.conf").write_text("")
    out = subprocess.run(["sh", "-c", commands.file_digests(str(tmp_path), ["compose.yaml", "gone", "nginx/a b.conf"])],
                         capture_output=True, text=True, check=True).stdout
    assert FileDigests().process(out.splitlines()) == {
        "compose.yaml": hashlib.sha256(b"name: kono\n").hexdigest(), "gone": None,
        "nginx/a b.conf": hashlib.sha256(b"").hexdigest()}
    none_there = subprocess.run(["sh", "-c", commands.file_digests(str(tmp_path), ["gone"])],
                                capture_output=True, text=True, check=True).stdout
    assert FileDigests().process(none_there.splitlines()) == {"gone": None}


def test_reads_run_as_one_command_each_in_its_own_section():
    # A read that exits early (the project directory is missing) ends only its own section.
    out = subprocess.run(["sh", "-c", "echo taken; " + commands.sections(
        ["cd /nonexistent 2>/dev/null || exit 0; echo never", "echo b; echo c", "exit 3"])],
        capture_output=True, text=True, check=True).stdout.splitlines()
    assert host_state.split_sections(out, 3) == (["taken"], [[], ["b", "c"], []])
    assert host_state.split_sections(["locked by someone"], 3) == (["locked by someone"], [])


def test_the_state_read_gives_the_digest_compose_up_records(tmp_path):
    (tmp_path / "compose.yaml").write_text("name: kono\n")
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "default.conf").write_text("server {}\n")

    def read() -> dict:
        out = subprocess.run(["sh", "-c", commands.stack_state(str(tmp_path), "kono-unit-test", ("nginx",), {})],
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout
        # No Docker here: the containers line (empty, or no-curl without curl) is another test's.
        return StackState().process([line for line in out.splitlines() if not line.startswith("containers")])

    assert read()["applied"] is None  # never brought up
    # What compose_up records after a successful `up` (commands.compose_up: digest=$(project_digest) ...).
    subprocess.run(["sh", "-c", commands.in_dir(str(tmp_path), f"mkdir -p {commands.STATE_DIR} && "
                                                f"echo \"$({commands.project_digest(('nginx',))})\" > {commands.APPLIED}")],
                   check=True)
    state = read()
    assert state["digest"] == state["applied"] and len(state["digest"]) == 64
    (tmp_path / "compose.yaml").write_text("name: kono2\n")
    assert read()["digest"] != state["applied"]
    (tmp_path / "a").mkdir()  # files in a folder, beside a name that sorts between them
    (tmp_path / "a" / "b").write_text("1\n")
    (tmp_path / "a.c").write_text("2\n")
    subprocess.run(["sh", "-c", commands.in_dir(str(tmp_path), f"echo \"$({commands.project_digest(('nginx',))})\" "
                                                f"> {commands.APPLIED}")], check=True)
    state = read()
    assert state["digest"] == state["applied"]


@contextlib.contextmanager
def session_holding_the_lock(tmp_path, record: str):
    """The deploy lock taken in a stand-in "SSH session" (a sleeping shell: the holder watches it as
    it would watch sshd's), with its holder up; the session ends (killed) on leaving."""
    session = subprocess.Popen(["sh", "-c", "sh -c " + shlex.quote(commands.take_lock(str(tmp_path), 0, record))
                                + "; sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout.readline().strip() == "taken"
        deadline = time.monotonic() + 5
        while not (tmp_path / commands.HOLDER).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield session
    finally:
        session.kill()
        session.wait()


def test_the_lock_is_held_after_the_command_and_freed_at_once_by_the_finished_record(tmp_path):
    def run(command: str) -> str:
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout

    def free() -> bool:
        return subprocess.run(["flock", "-n", str(tmp_path / commands.LOCK), "true"]).returncode == 0

    with session_holding_the_lock(tmp_path, "{}"):
        assert not free()  # the command has ended; the holder keeps the lock for the session
        start = time.monotonic()
        run(commands.finish_record(str(tmp_path), {"result": "success"}))
        while not free() and time.monotonic() - start < 3:
            time.sleep(0.02)
        assert time.monotonic() - start < 0.5  # not the holder's one-second poll
        assert not (tmp_path / commands.HOLDER).exists()


def test_a_run_whose_session_ends_before_its_record_is_closed_is_recorded_failed_when_it_ended(tmp_path):
    # A deploy that failed, or was cut (the laptop closed): its SSH session ends with the record pending.
    (tmp_path / ".kono").mkdir()
    (tmp_path / commands.AUDIT_LOG).write_text('{"commit": "old", "result": "success"}\n')
    record = '{"commit": "abc", "started": "2026-12-04T06:00:00+00:00"}'
    with session_holding_the_lock(tmp_path, record):
        assert not (tmp_path / commands.AUDIT_LOG).read_text().count("abc")  # pending while the session lives
    ended = datetime.datetime.now(datetime.timezone.utc)
    deadline = time.monotonic() + 5
    while (tmp_path / commands.PENDING).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    last = json.loads((tmp_path / commands.AUDIT_LOG).read_text().splitlines()[-1])
    assert last["commit"] == "abc" and last["result"] == "failed or interrupted"
    assert abs(datetime.datetime.fromisoformat(last["finished"]) - ended) < datetime.timedelta(seconds=5)
    assert subprocess.run(["flock", "-n", str(tmp_path / commands.LOCK), "true"]).returncode == 0
    assert not (tmp_path / commands.HOLDER).exists()


def test_the_containers_read_says_when_curl_is_missing_and_reads_none_when_docker_is_down(tmp_path):
    def containers(path: str) -> list[str]:
        out = subprocess.run(["/bin/sh", "-c", commands.services_state("kono")], capture_output=True, text=True,
                             env={"PATH": path}, check=True).stdout
        return out.splitlines()

    assert containers(str(tmp_path)) == ["containers no-curl"]
    fake_curl = tmp_path / "curl"  # as curl exits when nothing listens on the socket
    fake_curl.write_text("#!/bin/sh\necho 'curl: (7) Failed to connect' >&2\nexit 7\n")
    fake_curl.chmod(0o755)
    assert containers(str(tmp_path)) == ["containers "]  # read as no containers (tests/unit/test_facts.py)


# A value with a space, as a path, a folder, an image or a snapshot could hold: each builder must hand it
# to the shell as one word (quoted), never as two.
HOSTILE = "/tmp/ko no"
TAKES_VALUES = {
    "file_digests": lambda v: commands.file_digests(v, [v]),
    "file_text": lambda v: commands.file_text(v),
    "make_dir": lambda v: commands.make_dir(v) + "; " + commands.make_dir(v, "0700"),
    "chmod": lambda v: commands.chmod("0600", v),
    "files_state": lambda v: commands.files_state([v]),
    "path_modes": lambda v: commands.path_modes([v]),
    "unpack_as_root": lambda v: commands.unpack_as_root(v, [v], v),
    "make_private_dirs": lambda v: commands.make_private_dirs([v]),
    "replace_compose_file_if_valid": lambda v: commands.replace_compose_file_if_valid(v),
    "project_digest": lambda v: commands.project_digest((v,)),
    "stack_state": lambda v: commands.stack_state(v, "kono", (v,), {"api": [v]}),
    "compose_up": lambda v: commands.compose_up(v, 300, {"api": [v]}, (v,), {"api": 30}, ("db",), {"api": "a b c"},
                                                {v: "d"}),
    "stage_folder": lambda v: commands.stage_folder(v, v),
    "nginx_check": lambda v: commands.nginx_check(v, v, v, "d", ((v, "/etc/nginx/tls"),)),
    "apply_folder": lambda v: commands.apply_folder(v, v, "d", v),
    "switch_staged_folders": lambda v: commands.switch_staged_folders({v: "d"}),
    "served_certificate": lambda v: commands.served_certificate(v),
    "issue_certificate": lambda v: commands.issue_certificate(v, v, v, v, v),
    "fetch_certificate": lambda v: commands.fetch_certificate(v, v),
    "acme_certificate_state": lambda v: commands.acme_certificate_state(v, v),
    "last_backup": lambda v: commands.last_backup(v, v),
    "restore_from_repository": lambda v: commands.restore_from_repository(v, (v, v, v), True, v),
    "restore_from_repository pinning": lambda v: commands.restore_from_repository(v, (v, v, v), True, v, pin=(v,)),
    "restore_from_repository with replay": lambda v: commands.restore_from_repository(v, (v, v, v), True, v,
                                                                                       (v, (v,))),
    "shipped_binlogs": lambda v: commands.shipped_binlogs(v, v),
    "repository_snapshots": lambda v: commands.repository_snapshots(v, v),
    "config_tree": lambda v: commands.config_tree(v),
    "generate_secret": lambda v: commands.generate_secret(v, 32),
    "move_into_place": lambda v: commands.move_into_place(v, v),
    "rename": lambda v: commands.rename(v, v),
    "read_file": lambda v: commands.read_file(v),
    "alter_users": lambda v: commands.alter_users(v, v, "db_production", "/run/x", ("api@%",)),
    "tar_out": lambda v: commands.tar_out(v, "maintainer", v),
    "in_service": lambda v: commands.in_service(v, v, v, (f"X={v}",)),
    "take_lock": lambda v: commands.take_lock(v, 5, "{}"),
    "finish_record": lambda v: commands.finish_record(v, {}),
    "install_checked_sshd_config": lambda v: commands.install_checked_sshd_config(v, v, ("kono",)),
    "authorized_key_count": lambda v: commands.authorized_key_count(v),
    "apply_sysctl": lambda v: commands.apply_sysctl(v),
    "fail": lambda v: commands.fail(v),
}


@pytest.mark.parametrize("name", TAKES_VALUES)
def test_every_value_reaches_the_shell_as_one_word(name):
    built = TAKES_VALUES[name](HOSTILE)
    assert syntax_ok(built), built
    head, tail = HOSTILE.split(" ")
    split = [word for word in shlex.split(built) if word == head or word == tail or word.startswith(tail + "/")
             or word.endswith("/" + head.lstrip("/"))]
    assert split == [], built


def test_the_hostile_value_check_finds_an_unquoted_one():
    assert [w for w in shlex.split(f"cat {HOSTILE}") if w in HOSTILE.split(" ")] == HOSTILE.split(" ")


def test_bootstraps_reads_parse():
    from kono.ssh_policy import SSH_QUERY
    for built in (commands.ssh_algorithms(SSH_QUERY), commands.ssh_session(), commands.apt_suites(),
                  commands.pending_security_updates(), commands.apply_security_updates()):
        assert syntax_ok(built), built


FAKE_DOCKER = """#!/bin/sh
# docker ps prints $FAKE_COMPOSE for a compose label filter, $FAKE_SWARM for a stack's; docker exec
# runs its command here, logging its options, with stdin passed on.
case "$1" in
  ps) case "$*" in *com.docker.compose.project*) printf '%b' "$FAKE_COMPOSE" ;; *) printf '%b' "$FAKE_SWARM" ;; esac ;;
  exec) shift; while [ "$1" != "${1#-}" ]; do
          if [ "$1" = -e ]; then echo "env $2" >> "$FAKE_LOG"; shift; else echo "option $1" >> "$FAKE_LOG"; fi; shift
        done
        echo "container $1" >> "$FAKE_LOG"; shift; exec "$@" ;;
esac
"""


@pytest.mark.parametrize("compose, swarm, container", [
    ("c0ffee\\n", "", "c0ffee"),  # a single host's compose container
    ("", "5ca1ab1e\\n", "5ca1ab1e"),  # a swarm's task on this node
    ("", "", None),  # none runs here
])
def test_in_service_runs_in_the_container_found_here_or_says_none_runs(tmp_path, compose, swarm, container):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_COMPOSE": compose, "FAKE_SWARM": swarm, "FAKE_LOG": str(log)}
    run = subprocess.run(["sh", "-c", commands.in_service("kono", "backup", "cat; echo \"$0 ran\"", ("A=b c",))],
                         input="from stdin\n", capture_output=True, text=True, env=env)
    if container:
        assert run.returncode == 0 and run.stdout == "from stdin\nsh ran\n", run
        assert log.read_text() == f"option -i\nenv A=b c\ncontainer {container}\n"
    else:
        assert run.returncode != 0 and run.stdout == "" and not log.exists()
        assert run.stderr == "backup: no running container of it on this host\n"
    # A read that may find nothing (status, drift) stays quiet and succeeds.
    quiet = subprocess.run(["sh", "-c", commands.last_backup("kono", "/x.sh") + "; echo after"],
                           capture_output=True, text=True, env={**env, "FAKE_COMPOSE": "", "FAKE_SWARM": ""})
    assert quiet.returncode == 0 and quiet.stdout == "after\n" and quiet.stderr == ""


def test_docker_restarted_starts_again_the_compose_containers_its_restart_skipped(tmp_path):
    """moby/moby#31735: after live-restore is turned off, the new daemon leaves the containers it
    killed stopped once. Those that ran before and do not now are started; the others left alone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    (bin_dir / "docker").write_text(f"""#!/bin/sh
echo "docker $*" >> {log}
case "$1" in
  ps) echo kept; echo skipped ;;
  inspect) [ "$4" = kept ] && echo true || echo false ;;
esac
""")
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"systemctl $*\" >> {log}\n")
    for tool in ("docker", "systemctl"):
        (bin_dir / tool).chmod(0o755)
    run = subprocess.run(["sh", "-c", commands.restart_docker_keeping_containers()], capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    ran = log.read_text().splitlines()
    assert ran[0] == "docker ps -q --filter label=com.docker.compose.oneoff=False"  # what ran before
    assert ran[1] == "systemctl restart docker"
    assert [line for line in ran if line.startswith("docker start")] == ["docker start skipped"]


def test_the_stack_read_keeps_every_containers_state_when_a_services_secret_is_missing(tmp_path):
    """A service these settings do not enable has no secret file on the host: its digest line must end
    anyway, or it swallows the first container's state and every deploy brings the stack up (seen
    with alertmanager's webhook URL on a host without alerts)."""
    paths = service_secret_paths()
    present = [p for service, listed in paths.items() for p in listed if service in ("api", "db_dev")]
    for path in present:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    output = subprocess.run(["sh", "-c", commands.in_dir(str(tmp_path), "{ " + commands.secrets_now(paths)
                                                         + "; } 2>/dev/null; echo 'state line'")],
                            capture_output=True, text=True).stdout.splitlines()
    assert output[-1] == "state line"
    assert len(output) == 1 + sum(1 for listed in paths.values() if listed)
    assert any(len(listed) == 1 for service, listed in paths.items() if service not in ("api", "db_dev"))
