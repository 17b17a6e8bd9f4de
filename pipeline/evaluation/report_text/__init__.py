"""report.md's text: a Markdown table's cells (cells), one function per section of the
figures (sections), and the page that puts them in order (page)."""
