"""A plugin whose module cannot be imported: a dependency its author forgot to declare."""
from hssk_dependency_nobody_installed import COMMANDS

hssk_contract = "1.0"


def hssk_commands():
    return COMMANDS
