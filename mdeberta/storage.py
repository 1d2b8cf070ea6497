"""Writing outputs: files appear complete under their final name or not at all, and a write the
system refuses (full disk, no permission, read-only disk) is one line naming the path and, for a
full disk, the room the write needed."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
from pathlib import Path

from .errors import UserError

# What the system says when it refuses a write.
REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.EIO}
_ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some of your quota or write elsewhere",
    errno.EACCES: "check the folder's permissions or choose another output folder",
    errno.EPERM: "check the folder's permissions or choose another output folder",
    errno.EROFS: "choose an output folder on a writable disk",
}
# torch.save and safetensors report the system's error inside their own exception's text.
_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)|errno (\d+)", re.IGNORECASE)


class WriteError(UserError):
    """The system refused a write; nothing half-written is left under the final name."""


def os_error_code(err: BaseException) -> int | None:
    """The errno of the first system error in ``err``'s chain (or named in its text)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno
        found = _OS_ERROR_IN_TEXT.search(str(err))
        if found:
            return int(found.group(1) or found.group(2))
        err = err.__cause__ or err.__context__
    return None


def _size(count: int) -> str:
    if count < 1000:
        return f"{count:,} bytes"
    for unit in ("KB", "MB", "GB"):
        count /= 1000
        if count < 999.5:
            return f"{count:.3g} {unit}"
    return f"{count / 1000:,.1f} TB"


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def describe_write_failure(path: Path, code: int, needed: int | None = None, approximate: bool = False) -> str:
    message = f"cannot write {path}: {os.strerror(code)}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(Path(path))
        room = [f"the write needed {'about ' if approximate else ''}{_size(needed)}" if needed is not None else None,
                f"{_size(free)} free there" if free is not None else None]
        if any(room):
            message += f" ({', '.join(r for r in room if r)})"
    advice = _ADVICE.get(code)
    return f"{message}; {advice}" if advice else message


@contextlib.contextmanager
def writing(path: str | Path, needed: int | None = None, partial: str | Path | None = None,
            approximate: bool = False):
    """Turns a refused write into a WriteError naming ``path``; ``needed`` is the size of what is
    being written (``approximate`` for a streamed file estimated from its input). ``partial`` (a
    temporary file or folder) is removed on any failure."""
    try:
        yield
    except BaseException as err:
        if partial is not None:
            remove(Path(partial))
        if isinstance(err, UserError):  # already one line, e.g. a bad input read inside the block
            raise
        code = os_error_code(err) if isinstance(err, Exception) else None
        if code not in REFUSALS:  # a missing input or a bug keeps its own error
            raise
        raise WriteError(describe_write_failure(Path(path), code, needed, approximate)) from err


def require_room(folder: Path, needed: int, what: str) -> None:
    """Refuses before writing ``needed`` bytes that cannot fit (a half-written checkpoint costs
    the time of writing it)."""
    free = _free_bytes(folder)
    if free is not None and free < needed:
        raise WriteError(f"cannot write {what} in {folder}: {os.strerror(errno.ENOSPC)} (the write needs "
                         f"{_size(needed)}, {_size(free)} free there); {_ADVICE[errno.ENOSPC]}")


def reserve_disk(path: Path) -> None:
    """Allocates the blocks of a file about to be written through a memory map: without them, a
    disk that fills up kills the process with SIGBUS instead of raising an error here."""
    if not hasattr(os, "posix_fallocate"):  # not Linux
        return
    with open(path, "r+b") as file:
        try:
            os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without it: written as is
                raise


def tensor_bytes(state) -> int:
    """The bytes of the tensors in a (nested) state dict, each shared tensor once: what saving it
    writes, headers aside."""
    tensors, stack = {}, [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "element_size"):  # a tensor (torch is not imported by every stage)
            tensors[(item.data_ptr(), item.numel())] = item.numel() * item.element_size()
    return sum(tensors.values())


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Written to a temporary name and renamed: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, len(data), partial=tmp):
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_figure(figure, path: Path, **options) -> None:
    """A matplotlib figure, drawn in memory and written as one file, in the format of its suffix."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip("."), **options)
    write_bytes_atomic(path, buffer.getvalue())
