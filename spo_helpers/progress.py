"""Progress bars that fit where they run: a widget in a Jupyter kernel, text on a terminal, none headless.

    from spo_helpers.progress import progress_bar
    for spec in progress_bar(FIGURES, desc="figures", unit="figure"): ...

``TRAINING_BAR`` is the one name of the training bar of both methods (verl's own for GRPO's ``fit()``); the SPO
loop creates its bar with it and GRPO's ``fit()`` runs with ``bars_in(verl's trainer module)``, which makes
verl's bar one of these too. Headless runs (``SPO_HEADLESS`` set: ``spo pipeline``, ``make test-notebooks``)
show no bars: nobody watches them and they would fill the executed notebooks.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

TRAINING_BAR = "Training Progress"
HEADLESS_ENV = "SPO_HEADLESS"


def headless() -> bool:
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_bar(iterable: Any = None, *, terminal: bool | None = True, **kwargs: Any):
    """A ``tqdm`` bar: ``tqdm.auto`` (a widget) in a kernel, text on stderr elsewhere, disabled headless.

    ``terminal``: on a terminal, True always draws the bar, None only when stderr is a TTY (not in logs).
    Other arguments are tqdm's.
    """
    if headless():
        from tqdm import tqdm

        kwargs["disable"] = True
        return tqdm(iterable, **kwargs)
    if in_kernel():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    from tqdm import tqdm

    kwargs.setdefault("disable", False if terminal else None)
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def bars_in(module: ModuleType) -> Iterator[None]:
    """While the block runs, ``module.tqdm`` (a module that did ``from tqdm import tqdm``) is ``progress_bar``."""
    original = module.tqdm
    module.tqdm = progress_bar
    try:
        yield
    finally:
        module.tqdm = original
