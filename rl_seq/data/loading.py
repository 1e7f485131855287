"""Load episodes by Minari id from the local store (``MINARI_DATASETS_PATH``), making the
built-in datasets on first use and downloading only when asked (``download=True``)."""

from __future__ import annotations

import difflib
import logging
import os

from rl_seq.data.builtin import BUILTIN, make_builtin
from rl_seq.data.episodes import Episodes

log = logging.getLogger(__name__)


class DatasetNotFoundError(LookupError):
    """A dataset id is neither local, built-in, nor asked to be downloaded."""


def local_datasets() -> list[str]:
    import minari

    return sorted(minari.list_local_datasets())


def load_minari(dataset_id: str, download: bool = False):
    """The ``minari.MinariDataset`` for an id: local, built-in (made now) or downloaded."""
    import minari

    local = local_datasets()
    if dataset_id not in local:
        if dataset_id in BUILTIN:
            return _make_builtin_once(dataset_id)
        if download:
            minari.download_dataset(dataset_id)
            return minari.load_dataset(dataset_id)
        store = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        close = difflib.get_close_matches(dataset_id, [*local, *BUILTIN], n=3, cutoff=0.8)
        hint = f" did you mean {close[0]!r}?" if close else ""
        fetch = ("  rl_seq/... ids are the built-in ones above; nothing to download\n"
                 if dataset_id.startswith("rl_seq/") else
                 f"  to fetch it: rl-seq datasets download {dataset_id}   (or pass --download)\n")
        raise DatasetNotFoundError(
            f"dataset {dataset_id!r} is not in the local Minari store ({store}).{hint}\n"
            f"  local datasets: {', '.join(local) or '(none)'}\n"
            f"  built-in (made on first use): {', '.join(BUILTIN)}\n"
            f"{fetch}"
            f"  to use another store: export MINARI_DATASETS_PATH=/path/to/datasets")
    return minari.load_dataset(dataset_id)


def load_episodes(dataset_id: str, download: bool = False) -> Episodes:
    """Episodes of a Minari dataset (see :func:`load_minari`)."""
    return Episodes.from_minari(load_minari(dataset_id, download))


def _make_builtin_once(dataset_id: str):
    """Make a built-in dataset, once however many processes ask at the same time (DDP ranks,
    parallel runs): the first takes a lock on the store and makes it, the others wait and load it."""
    import fcntl

    import minari
    from minari.storage.datasets_root_dir import get_dataset_path

    root = get_dataset_path()
    with open(root / ".rl_seq-builtin.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dataset_id in local_datasets():  # another process made it while this one waited
            return minari.load_dataset(dataset_id)
        log.info("making built-in dataset %s (a few seconds)", dataset_id)
        return make_builtin(dataset_id)

