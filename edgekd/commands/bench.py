"""`edgekd bench` (being written)."""

HELP = "(not available yet)"


def add_arguments(parser) -> None:
    pass


def main(args) -> int:
    from deploy.errors import UsageError

    raise UsageError("edgekd bench is not available in this build yet")
