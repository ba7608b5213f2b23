"""Option help that names a registry's choices, filled in only when the help page is shown.

Some registries (probe kinds, patch targets, metrics) live in modules that import torch; listing their
names in ``--help`` at registration would make every ``probekit`` start pay for torch. A command made with
``cls=lazy_help(kinds=...)`` writes ``{kinds}`` in an option's help and gets the registry's names when its
own help page is rendered. (Not a command module: the leading underscore keeps it out of the registry.)
"""

from __future__ import annotations

from collections.abc import Callable

from typer.core import TyperCommand


class _LazyHelpCommand(TyperCommand):
    fills: dict[str, Callable[[], str]] = {}

    def format_help(self, ctx, formatter) -> None:
        values = {key: fill() for key, fill in self.fills.items()}
        for param in self.params:
            help_text = getattr(param, "help", None)
            if help_text:
                for key, value in values.items():
                    help_text = help_text.replace("{" + key + "}", value)
                param.help = help_text
        super().format_help(ctx, formatter)


def lazy_help(**fills: Callable[[], str]) -> type[TyperCommand]:
    """A command class whose options' ``{key}`` placeholders become ``fills[key]()`` when help is shown."""
    return type("LazyHelpCommand", (_LazyHelpCommand,), {"fills": fills})
