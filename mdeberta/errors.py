"""The one exception type the CLI reports as a single line (exit status 2).

Stages raise subclasses for failures a user can fix (a missing file, a bad setting); anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An expected failure; the message names the file, line or setting and what to do."""
