"""A command-line dispatcher: `PROG COMMAND [ARGS...]`, each command a function `main(argv) -> int`.

A project lists its commands as name -> ("module:function", one-line help) and calls `dispatch`.
Each command's module is imported only when that command runs, so a light command never pays for a
heavy one's imports. `COMMANDS` holds the executor's own: `log`, `status` and `logs`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Mapping, Optional, Sequence

Commands = Mapping[str, tuple[str, str]]

COMMANDS: dict[str, tuple[str, str]] = {
    "log": ("pipeline.experiment_log:cli_main", "print or open an experiment log"),
    "status": ("pipeline.status_view:cli_main", "where an experiment stands, from its files (no Ray)"),
    "logs": ("pipeline.step_log:cli_main", "print a step's log (what it printed and logged); --follow to tail it"),
}


def usage(prog: str, commands: Commands) -> str:
    width = max(len(name) for name in commands)
    lines = [f"usage: {prog} COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in commands.items()]
    lines.append(f"\nRun `{prog} COMMAND --help` for a command's options.")
    return "\n".join(lines)


def dispatch(prog: str, commands: Commands, argv: Optional[Sequence[str]] = None) -> int:
    """Run the command `argv[0]` names with the rest of `argv` (default: sys.argv[1:])."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(prog, commands))
        return 0
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"{prog}: unknown command {name!r}\n\n{usage(prog, commands)}", file=sys.stderr)
        return 2
    module_name, func_name = commands[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The executor's own commands alone."""
    return dispatch("pipeline", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
