"""The studies: measurements run on their own, each rendered into its own docs page
(benchmarks/README.md lists their status and commands).

- :mod:`benchmarks.studies.method`: the method measured in the miniature world (docs/method.md);
- :mod:`benchmarks.studies.miniworld`: the miniature world's oracle and generator (docs/miniworld.md);
- :mod:`benchmarks.studies.sd15`: SD-1.5 + ControlNet at their published sizes, on the random-weight
  twin (docs/export.md, docs/performance.md).
"""
