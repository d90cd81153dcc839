"""rfad.trainer."""
