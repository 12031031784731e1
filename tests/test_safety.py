"""Safety: bad input never touches the host, a broken change never takes the stack down, one
deploy at a time with an audit record, and interrupted runs converge."""

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import lab as lab_tools
from tests.lab import container

pytestmark = pytest.mark.e2e

BAD_INPUT = [  # (--data value, the key the message must name, what it must say was expected)
    ("http_port=70000", "http_port", "port number from 1 to 65535"),
    ("maintainer_ssh_port=80", "maintainer_ssh_port", "not already used by http_port"),
    ("docker_source=snap", "docker_source", "one of docker, distro"),
    ("project_dir=srv/kono", "project_dir", "absolute path"),
    ("deploy_user=Kono Admin", "deploy_user", "Linux user name"),
    ("deploy_user=ops", "deploy_user", "set ssh_user = 'ops' too"),
    ("mysql_image=MySQL 8", "mysql_image", "image reference"),
    ("compose_project=Kono!", "compose_project", "compose project name"),
    ("server_name=a;b", "server_name", "nginx server names"),
    ("docker_live_restore=maybe", "docker_live_restore", "True or False"),
    ("api_repo=not a url", "api_repo", "git URL"),
    ("compose_wait_timeout=1", "compose_wait_timeout", "whole number >= 10"),
    ("deploy_authorized_keys=[]", "deploy_authorized_keys", "non-empty list of SSH public keys"),
    ('maintainer_users={"sysop": [], "ops": []}', "maintainer_users['ops']", "expected a password"),
]


@pytest.mark.parametrize("data, key, expected", BAD_INPUT, ids=[b[1] for b in BAD_INPUT])
def test_bad_input_fails_naming_the_key_and_changes_nothing(provisioned, data, key, expected):
    provisioned.wait_healthy()
    before = provisioned.snapshot()
    run = provisioned.deploy("--data", data, check=False)
    assert run.returncode != 0
    assert f"{key}: expected" in run.output and expected in run.output, run.output[-2000:]
    assert "Traceback" not in run.output
    assert provisioned.snapshot() == before


def test_a_broken_compose_template_fails_with_composes_message_and_leaves_the_stack_running(
        provisioned, tmp_path):
    provisioned.wait_healthy()
    before = provisioned.snapshot()
    checkout = tmp_path / "kono-infra"
    shutil.copytree(lab_tools.REPO, checkout, ignore=shutil.ignore_patterns(".venv", ".git", "node_modules"))
    template = checkout / "templates/services/api.yaml.j2"
    original = template.read_text()
    template.write_text(original.replace("restart: unless-stopped\n", "restart: unless-stopped\nbogus_setting: 1\n", 1))
    assert template.read_text() != original
    run = lab_tools.pyinfra(provisioned.inventory, "deploy.py", check=False, cwd=checkout)
    assert run.returncode != 0
    assert "bogus_setting" in run.output  # compose's own words
    assert provisioned.snapshot() == before  # same files in place, same containers, all running
    provisioned.wait_healthy(timeout=10)
    assert provisioned.deploy("--json").changes == 0


def audit_log(provisioned) -> list[dict]:
    text = provisioned.host.ssh("cat /srv/kono/.kono/audit.log", user="kono").stdout
    return [json.loads(line) for line in text.splitlines()]


def test_each_deploy_appends_one_audit_line(provisioned):
    provisioned.wait_healthy()
    before = audit_log(provisioned)
    provisioned.deploy()
    after = audit_log(provisioned)
    assert after[:-1] == before
    line = after[-1]
    assert line["result"] == "success" and line["changes"] == 0
    assert line["commit"].split("-")[0] == lab_tools.git_commit()
    assert line["user"] == lab_tools.local_user()
    assert line["started"] <= line["finished"]


def test_concurrent_deploys_never_interleave(provisioned):
    provisioned.wait_healthy()
    # Work for the first deploy (two services to start again), so that it still holds the lock when the
    # other two, started at once side by side, ask for it (a loaded machine starts pyinfra slowly).
    provisioned.host.ssh(f"docker stop --time 1 {container('nginx')} {container('maintainer')}", user="kono")
    lines_before = len(audit_log(provisioned))
    first = lab_tools.pyinfra_background(provisioned.inventory, "deploy.py")
    try:
        deadline = time.monotonic() + 60
        while provisioned.host.ssh("test -s /srv/kono/.kono/deploy.pending", user="kono",
                                   check=False).returncode != 0:
            assert time.monotonic() < deadline and first.poll() is None, "first deploy never took the lock"
            time.sleep(0.2)
        with ThreadPoolExecutor(2) as pool:
            impatient = pool.submit(provisioned.deploy, "--data", "deploy_lock_wait=0", check=False)
            patient = pool.submit(provisioned.deploy)  # waits, says so, then runs
            impatient, patient = impatient.result(), patient.result()
        assert impatient.returncode != 0
        assert "another deploy is running on this host, started as {" in impatient.output
        assert "waiting up to 600s for it to finish" in patient.output
    finally:
        output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output[-3000:]
    first_line, second_line = audit_log(provisioned)[lines_before:]
    assert first_line["result"] == second_line["result"] == "success"
    assert first_line["finished"] <= second_line["finished"]
    provisioned.wait_healthy()


# Operations that run commands on the host long enough to be caught running: the lock (and the one
# read of the host it carries), the project's files (nginx's check, the uploads), the bring-up.
KILL_POINTS = ["Take the host's deploy lock", "Compose project files", "Validate the project and bring the stack up"]


@pytest.mark.parametrize("operation", KILL_POINTS)
def test_a_deploy_killed_in_the_middle_of_an_operation_is_finished_by_the_next(provisioned, operation):
    provisioned.wait_healthy()
    count = lab_tools.API_SQL
    provisioned.host.ssh(count, user="kono", input="CREATE TABLE IF NOT EXISTS kept (n INT); INSERT INTO kept VALUES (1);")
    rows = provisioned.host.ssh(count, user="kono", input="SELECT COUNT(*) FROM kept;").stdout.strip()
    # A new server_name (nginx checked and reloaded) and a maintainer recreated: work all along the deploy.
    point = KILL_POINTS.index(operation)
    server_name = f"kill-{point}.example"
    data = ("--data", f"server_name={server_name}", "--data", f"releases_kept={point + 6}")
    records = len(audit_log(provisioned))
    victim = lab_tools.pyinfra_background(provisioned.inventory, "deploy.py", *data)
    _, rest = lab_tools.kill_when_operation_starts(victim, operation)
    # Killed before that operation ended: pyinfra had said nothing more of it.
    assert not any(word in rest for word in ("Success", "No changes", "Error")), rest

    finished = provisioned.deploy("--json", *data)
    assert finished.json["results"]["totals"]["error"] == 0
    provisioned.wait_healthy()
    assert provisioned.deploy("--json", *data).changes == 0
    assert f"server_name {server_name};" in provisioned.host.ssh(
        f"docker exec {container('nginx')} cat /etc/nginx/conf.d/default.conf", user="kono").stdout
    assert f"RELEASES_KEPT={point + 6}" in provisioned.host.ssh(
        f"docker exec {container('maintainer')} env", user="kono").stdout
    # The killed run never reached its end; once it had taken the lock, its lock holder recorded it as
    # interrupted when the session ended, with that time (killed while taking it, it may not have got it).
    since = [record for record in audit_log(provisioned)[records:] if "started" in record]
    assert [record["result"] for record in since[-2:]] == ["success", "success"]
    interrupted = (["failed or interrupted"],) if point > 0 else ([], ["failed or interrupted"])
    assert [record["result"] for record in since[:-2]] in interrupted, since
    assert all(record["started"] <= record["finished"] for record in since), since
    assert provisioned.host.ssh(count, user="kono", input="SELECT COUNT(*) FROM kept;").stdout.strip() == rows
    assert provisioned.deploy("--json").changes > 0  # back to the declared server_name


def test_an_unknown_host_key_is_refused_not_trusted(provisioned, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = lab_tools.write_inventory(provisioned.lab, [provisioned.host], tmp_path / "inventory.py",
                                          ssh_known_hosts_file=str(empty))
    run = lab_tools.deploy(inventory, check=False)  # group_data/all.py's strict checking applies
    assert run.returncode != 0
    assert "host key" in run.output.lower()
    assert empty.read_text() == ""
