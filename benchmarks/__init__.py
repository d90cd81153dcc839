"""rfad's measurements, run from the checkout's root as modules (``python -m benchmarks.suite.run_all``).

- :mod:`benchmarks.suite`: what ``make bench`` runs, all of it rendered into docs/performance.md;
- :mod:`benchmarks.studies`: the studies run on their own (the method, the miniature world,
  SD-1.5 at its published sizes), each rendered into its own docs page;
- :mod:`benchmarks.common`: the plumbing they share (results files, timing, Markdown tables);
- ``results/``: every run's JSON (machine, versions, settings, rows) and the plots.

Benchmarks use the stages through their public APIs only (``rfad.trainer.api``,
``rfad.export.api``, ``rfad.client``) and the core freely; the import contracts in
pyproject.toml hold them to it. benchmarks/README.md lists each study's status and command.
"""
