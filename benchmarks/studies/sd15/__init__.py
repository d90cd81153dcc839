"""SD-1.5 + ControlNet at their published sizes, on the random-weight twin: ``make bench-sd15``
(:mod:`.sd15_shape`), and which ops lose the fp16 parity (:mod:`.fp16_ops`)."""
