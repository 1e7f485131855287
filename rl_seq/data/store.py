"""Writing datasets into the local Minari store so an interrupted creation (Ctrl-C, a kill,
a full disk) leaves nothing behind: a dataset is created in a hidden temporary store inside
the real one (Minari lists no hidden folders) and renamed into place once complete."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path


def create_dataset(dataset_id: str, buffers: list, metadata: dict | None = None, **kwargs):
    """``minari.create_dataset_from_buffers(dataset_id, buffers, **kwargs)``, atomically;
    an existing dataset of that id is replaced only once the new one is complete.
    ``metadata``: more keys for the dataset's metadata (written before it is moved in place)."""
    import minari
    from minari.storage.datasets_root_dir import get_dataset_path

    root = Path(get_dataset_path()).resolve()  # minari mangles a relative MINARI_DATASETS_PATH
    tmp = Path(tempfile.mkdtemp(prefix=".rl_seq-tmp-", dir=root))
    old = os.environ.get("MINARI_DATASETS_PATH")
    try:
        os.environ["MINARI_DATASETS_PATH"] = str(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # minari asks for author/permalink
            ds = minari.create_dataset_from_buffers(dataset_id, buffers, **kwargs)
        if metadata:
            ds.storage.update_metadata(metadata)
        for meta in tmp.rglob("namespace_metadata.json"):  # the namespaces' own files, if new
            dst = root / meta.relative_to(tmp)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(meta, dst)
        dst = root / dataset_id
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp / dataset_id, dst)
    finally:
        _restore(old)
        shutil.rmtree(tmp, ignore_errors=True)
    return minari.load_dataset(dataset_id)


def _restore(old: str | None) -> None:
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old
