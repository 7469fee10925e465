"""Training-side subcommands (finetune, build-emoji, ...), registered by cli.py."""

COMMANDS: list = []
