"""The benchmark suite: what ``make bench`` runs (:data:`benchmarks.suite.run_all.SCRIPTS`, every
module here that writes results), all of it rendered into docs/performance.md by
:mod:`benchmarks.suite.report`."""
