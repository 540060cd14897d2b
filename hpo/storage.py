"""Files in a local folder or under a URI (s3://, gs://...) that Ray Tune's storage understands.

The one place that tells paths from URIs; URIs are read and written with pyarrow, as Ray Tune does.
"""

from __future__ import annotations

from pathlib import Path


def is_uri(path) -> bool:
    return bool(path) and "://" in str(path)


def _fs(uri: str):
    import pyarrow.fs
    return pyarrow.fs.FileSystem.from_uri(uri)


def exists(path: str) -> bool:
    """Whether a file or folder exists."""
    if not is_uri(path):
        return Path(path).exists()
    import pyarrow.fs
    fs, fs_path = _fs(path)
    return fs.get_file_info(fs_path).type != pyarrow.fs.FileType.NotFound


def read_text(path: str) -> str | None:
    """A file's text, or None when there is none."""
    if not is_uri(path):
        return Path(path).read_text() if Path(path).is_file() else None
    fs, fs_path = _fs(path)
    try:
        with fs.open_input_stream(fs_path) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def subfolders(folder: str) -> list[str]:
    """The paths (or URIs) of a folder's subfolders; none when it does not exist."""
    if not is_uri(folder):
        return [str(p) for p in Path(folder).iterdir() if p.is_dir()] if Path(folder).is_dir() else []
    import pyarrow.fs
    fs, root = _fs(folder)
    scheme = folder.split("://", 1)[0]
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return [f"{scheme}://{i.path}" for i in infos if i.type == pyarrow.fs.FileType.Directory]


def delete_dir(uri: str) -> None:
    fs, fs_path = _fs(uri)
    fs.delete_dir(fs_path)


def upload(local_dir: Path, uri: str) -> None:
    """Copy a folder to a URI, as Ray Tune does with the experiment."""
    import pyarrow.fs
    fs, path = _fs(uri)
    fs.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(str(local_dir), path, destination_filesystem=fs)
