"""The one exception type users see: a clear message, no traceback wall."""


class DpoScaleError(Exception):
    """Bad input or state the user can fix; the CLI prints the message and exits with status 2."""


def where(path: object, row: int | None = None, field: str | None = None) -> str:
    """Format 'file, row N, field F' for error messages (rows are 1-based, like editors)."""
    parts = [str(path)]
    if row is not None:
        parts.append(f"row {row}")
    if field is not None:
        parts.append(f"field '{field}'")
    return ", ".join(parts)
