"""Reports: seed-level statistics and the Markdown/HTML comparison (reads files only)."""
