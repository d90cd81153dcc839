"""rfad.client."""
