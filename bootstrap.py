# Bootstrap: the only step that uses sudo. Connect as the cloud image's admin user:
#     pyinfra inventory.py bootstrap.py --user ubuntu      (admin on Debian)
from pyinfra import host

from kono.deploy_user import deploy_user
from kono.docker_engine import docker_engine
from kono.settings import load

settings = load(host.data)

docker_engine(settings, _sudo=True)
deploy_user(settings, _sudo=True)
