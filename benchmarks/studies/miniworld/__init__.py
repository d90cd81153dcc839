"""The miniature world, measured: the oracle's agreement with known labels, the generator's training
step and what it paints; docs/miniworld.md (:mod:`.report` renders its blocks)."""
