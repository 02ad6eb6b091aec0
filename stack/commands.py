"""plan / lock subcommands (filled in with the placement engine)."""


def register(sub) -> None:
    return None
