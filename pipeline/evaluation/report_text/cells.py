"""A Markdown table's rows and cells, for report.md: numbers rounded, the user's text escaped."""

import html


def row(*cells) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def num(value, digits: int = 3) -> str:
    """A float to `digits` decimals; anything else (an int, a None) as it is."""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def text(value) -> str:
    """A user's label in a table cell: escaped, its pipes too."""
    return "—" if value is None else html.escape(str(value)).replace("|", "\\|")
