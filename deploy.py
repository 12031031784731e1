# Deploy: connects as the deploy user, uses no sudo. Run after bootstrap, as often as you like:
#     pyinfra inventory.py deploy.py
from pyinfra import host

from kono.secrets import place_secrets
from kono.settings import load
from kono.stack import bring_up, push_project

settings = load(host.data)  # checks every knob first: bad input stops here, before any change

place_secrets(settings)
push_project(settings)
bring_up(settings)
