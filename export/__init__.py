"""rfad.export."""
