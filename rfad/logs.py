"""Keep command output readable: third-party progress bars and advisory warnings off.

diffusers and transformers print a progress bar per saved or loaded file and warnings that do
not apply here (e.g. torchvision-backed image processors we never use). Our commands show
their own progress; real errors still raise.
"""

from __future__ import annotations

import logging
import warnings


def quiet_third_party() -> None:
    """Silence diffusers/transformers info logs and per-file progress bars."""
    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
