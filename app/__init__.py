"""The app layer: what ties the stages together, and what nothing imports.

- :mod:`rfad.app.cli`: the umbrella ``rfad`` command (``rfad tiny``, ``rfad generate``, ``rfad demo``);
- :mod:`rfad.app.demo` and :mod:`rfad.app.demo_report`: ``rfad demo``, every stage once, end to end;
- :mod:`rfad.app.console_scripts`: the stage commands' front doors (``rfad-train``, ``rfad-export``,
  ...), which check the extra a command needs before importing it.

It uses the stages through their public APIs (``rfad.trainer.api``, ``rfad.export.api``,
``rfad.client``) and the core; the import contracts in pyproject.toml (tests/test_layers.py) keep
every other module from importing it.
"""
