"""One exception type the CLI and the pytest plugin turn into a one-line error."""


class KhError(Exception):
    """A user-facing failure: the message says what was wrong and what to do.

    Exit codes mean one thing everywhere: 2 bad input (UsageError), 3 the
    infrastructure failed (download, build, boot, agent, connection)."""

    exit_code = 3

    def __init__(self, message: str, *, exit_code: int | None = None, detail: str = ""):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.detail = detail  # extra lines (compiler output, console tail) shown below


class UsageError(KhError):
    exit_code = 2
