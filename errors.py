"""How a mistake reaches the user: the one error type library code raises for what the user can mend, and the one
place a script turns it into a single `error:` line and exit code 2 (argparse's own flag errors included).

The lowest module of all: data.py, arguments.py and every module raise UsageError, and every script (the data
folder's build tools too) reports through here, so none of them depends on a module above it for that.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from typing import NoReturn


class UsageError(ValueError):
    """A mistake the user can mend (a flag, a file, a setting), with a message that says what to do. Modules raise
    it and never end the process; a script's main (`script_main` below) prints it as one line and exits 2, while a
    notebook, a sweep or a test can catch it."""


def cli_error(message: str) -> NoReturn:
    """One line on stderr and exit code 2: the user gets the cause, not a traceback. For scripts only."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# bitsandbytes logs this when it is imported on a CPU with AVX512-bf16 and the optional hub kernel is absent (it
# falls back to its own); PEFT imports bitsandbytes whenever it is installed, so even a run without NF4 printed it.
BITSANDBYTES_KERNEL_NOTE = "Failed to load CPU gemm_4bit_forward from kernels-community"


def _not_bitsandbytes_kernel_note(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(BITSANDBYTES_KERNEL_NOTE)


def script_main(main: Callable) -> Callable:
    """Decorates a script's main(): a UsageError from the modules becomes `error: <message>` on stderr and exit
    code 2, as argparse does for a bad flag (the one place that turns an error into an exit), and bitsandbytes'
    kernel note above is not printed (that message alone)."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_bitsandbytes_kernel_note)
        try:
            return main(*args, **kwargs)
        except UsageError as err:
            cli_error(str(err))

    return run


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2, like every other user error here."""

    def error(self, message: str) -> NoReturn:
        cli_error(message)
