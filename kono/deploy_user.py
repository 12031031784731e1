"""The deploy user and the project directory (bootstrap, with sudo).

The deploy user logs in with the keys from group_data, is in the docker group and has no sudo
rights: after bootstrap, every deploy runs as it without privilege escalation.

Example::

    deploy_user(settings, _sudo=True)
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files, server

from kono.settings import Settings


@deploy("Deploy user and project directory")
def deploy_user(settings: Settings) -> None:
    user = settings.deploy_user
    server.user(name=f"Deploy user {user} in the docker group, with its SSH keys", user=user,
                shell="/bin/bash", home=f"/home/{user}", create_home=True, groups=["docker"],
                public_keys=list(settings.deploy_authorized_keys), delete_keys=True)
    files.file(name=f"No sudo rules for {user}", path=f"/etc/sudoers.d/{user}", present=False)
    files.directory(name=f"Project directory {settings.project_dir}, owned by {user}",
                    path=settings.project_dir, user=user, group=user, mode="0750")
