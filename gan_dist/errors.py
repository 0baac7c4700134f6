"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input or environment the user can fix; the message names the problem and the fix."""
