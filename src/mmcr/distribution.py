"""The installed distribution: its name, and the one conflict a user can install into.

This project is distributed as ``mmcr-toolkit`` and imported as ``mmcr``. The PyPI name ``mmcr`` belongs
to another, loss-only project (0.1.0, 2024) whose wheel also installs a top-level ``mmcr/`` folder
(``mmcr/__init__.py`` and ``mmcr/mmcr.py``). pip does not stop two distributions from writing the same
folder: whichever was installed last owns ``mmcr/__init__.py``, and uninstalling either one deletes it
under the other. :func:`foreign_mmcr` finds such a distribution so that ``import mmcr`` and the ``mmcr``
command can say so in one line.
"""

from __future__ import annotations

import warnings
from importlib import metadata

DISTRIBUTION = "mmcr-toolkit"
FOREIGN = "mmcr"  # the other project's distribution name on PyPI


class PackageConflictWarning(UserWarning):
    """Another installed distribution writes files into this package's ``mmcr/`` folder."""


def installed_version() -> str | None:
    """The version of the installed ``mmcr-toolkit`` distribution (None when run from a source tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def _owns_package_files(dist: metadata.Distribution) -> bool:
    # An editable install of this project under an old name lists no files inside mmcr/; a real copy does.
    return any(str(f).replace("\\", "/").startswith("mmcr/") for f in dist.files or ())


def foreign_mmcr(path: list[str] | None = None) -> str | None:
    """One line describing an installed distribution ``mmcr`` that shares the ``mmcr/`` folder, or None.

    ``path``: the directories to search (default ``sys.path``)."""
    kwargs = {"name": FOREIGN} if path is None else {"name": FOREIGN, "path": path}
    for dist in metadata.distributions(**kwargs):
        if _owns_package_files(dist):
            where = dist.locate_file("")
            return (f"another distribution named {FOREIGN!r} ({dist.version}, not this project) also installs the "
                    f"mmcr/ package in {where}: the one installed last owns mmcr/__init__.py and uninstalling either "
                    f"breaks the other; fix with `pip uninstall {FOREIGN} {DISTRIBUTION}` then "
                    f"`pip install {DISTRIBUTION}`")
    return None


def warn_if_foreign_mmcr() -> None:
    """Emit :class:`PackageConflictWarning` when :func:`foreign_mmcr` finds the other package."""
    message = foreign_mmcr()
    if message is not None:
        warnings.warn(message, PackageConflictWarning, stacklevel=3)
