"""Why a weights file could not be read: one line that says what the file is and what to do.

``torch.load(weights_only=True)`` refuses what it cannot read safely without running it,
but what it says is pages long, advises turning the check off, or is a bare key ("101"),
and a pickle of protocol 4 fails before the unsafe part is even reached. So on failure
attnlab looks for itself: the file's first bytes, and for pickles their opcodes, decoded
with :mod:`pickletools`, which reads opcodes and never executes them.
"""
from __future__ import annotations

import pickletools
import re
import zipfile
from pathlib import Path
from typing import BinaryIO, List, Optional, Set, Tuple

from .errors import one_line

EXPECTED = "a file written by torch.save (.pt, .pth, .bin) or a .safetensors file"
_RESAVE = "re-save the weights with torch.save(model.state_dict(), ...) or as .safetensors"
_AGAIN = "copy or download it again, or re-save it with torch.save"
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_GLOBAL_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+|copyreg extension \d+|a class or function")
_MAX_PICKLES = 6  # torch's legacy format is a magic number, a version, system info, the object, storage keys


def first_sentence(error: object, limit: int = 160) -> str:
    """The first sentence of another library's message, on one line, cut at a word if long."""
    text = one_line(error) or type(error).__name__
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " ..."
    return sentence


def _torch_safe_globals() -> Set[str]:
    """The globals torch's weights-only loader accepts (none when torch moved its private list)."""
    try:
        from torch import _weights_only_unpickler as safe

        return set(safe._get_allowed_globals()) | set(safe._get_user_allowed_globals())
    except Exception:  # without the list every global counts as unsafe: the safe side
        return set()


class _Capped:
    """A file whose reads never ask for more than is left: a pickle may claim any length."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._size = f, size

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._f.tell()
        return self._f.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline()


def _scan_pickle(f: _Capped) -> Tuple[Optional[int], List[str], bool]:
    """Protocol, globals (``module.name``) and completeness of the next pickle in ``f``."""
    protocol, names, memo, strings, top = None, [], {}, [], None
    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name == "PROTO":
                protocol = int(arg)
            elif op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":  # protocol 4+: module and name were pushed as strings
                names.append(".".join(strings[-2:]) if len(strings) >= 2 else "a class or function")
            elif op.name.startswith("EXT"):
                names.append(f"copyreg extension {arg}")
            if op.name in _STRING_OPS:
                top = str(arg)
                strings.append(top)
            elif op.name == "MEMOIZE":
                memo[len(memo)] = top
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = top
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                top = memo.get(arg)
                if isinstance(top, str):
                    strings.append(top)
            elif op.name != "FRAME":
                top = None
    except Exception:  # not a pickle, cut short, or a damaged zip member: keep what was decoded
        return protocol, names, False
    return protocol, names, True


def pickle_contents(path: Path) -> Tuple[Optional[int], List[str], bool]:
    """Protocol, globals, and whether whole pickles fill the file (a plain pickle or torch's data.pkl).

    Files that do not start like a protocol 2+ pickle (nor a torch zip) are not scanned:
    random bytes would decode into made-up globals.
    """
    if _is_zip(path):
        try:
            return _zip_pickle_contents(path)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError):  # a damaged archive
            return None, [], False
    size = path.stat().st_size
    protocol, names, ok = None, [], True
    with open(path, "rb") as raw:
        head = raw.read(2)
        if len(head) < 2 or head[0] != 0x80 or head[1] > 5:
            return None, [], False
        raw.seek(0)
        f = _Capped(raw, size)
        for _ in range(_MAX_PICKLES):
            if raw.tell() >= size:
                break
            proto, found, ok = _scan_pickle(f)
            protocol = proto if protocol is None else protocol
            names += found
            if not ok:
                break
        complete = ok and raw.tell() == size
    return protocol, names, complete


def _data_pkl(z: zipfile.ZipFile) -> Optional[str]:
    """The pickle member of a torch.save archive (``<name>/data.pkl``), if any."""
    return next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)


def _zip_pickle_contents(path: Path) -> Tuple[Optional[int], List[str], bool]:
    with zipfile.ZipFile(path) as z:
        member = _data_pkl(z)
        if member is None:
            return None, [], False
        size = z.getinfo(member).file_size
        with z.open(member) as f:
            protocol, names, ok = _scan_pickle(_Capped(f, size))  # type: ignore[arg-type]
            return protocol, names, ok and f.tell() == size


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, OSError, ValueError):  # an end record that lies
        return False


def _zip_without_pickle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return _data_pkl(z) is None
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _looks_like(head: bytes, path: Path) -> Optional[str]:
    """What a file that is neither a torch file nor a pickle looks like, from its first bytes."""
    size = path.stat().st_size
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:  # 8-byte header length, JSON
        return "a safetensors file: rename it to .safetensors"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras or h5py weights), which torch does not read"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file: unpack it first"
    if b"\0" not in head:
        text = head.decode("utf-8", errors="ignore")
        printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
        if text and printable >= 0.95 * len(text):
            if re.match(r"\s*(<!doctype html|<html)", text, re.IGNORECASE):
                return "an HTML page (a failed download?)"
            return f"a text file (it starts with {' '.join(text.split())[:40]!r})"
    return None


def unreadable_message(path: Path, error: BaseException) -> str:
    """The one line for a file ``torch.load(weights_only=True)`` failed on."""
    try:
        return _explain(path, error)
    except Exception:  # looking closer failed too: say what torch said
        return f"cannot read {path}: the file is truncated or corrupt ({first_sentence(error)}); {_AGAIN}"


def _explain(path: Path, error: BaseException) -> str:
    with open(path, "rb") as f:
        head = f.read(4096)
    protocol, names, complete = pickle_contents(path)
    if protocol is None:  # not scanned (protocol 0/1 starts with no PROTO): torch names what it refused
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))[:1]
    safe = _torch_safe_globals()
    unsafe = [n for n in names if n not in safe and _GLOBAL_NAME.fullmatch(n)]
    if unsafe:
        return (f"refused to load {path}: it contains pickled Python objects ({unsafe[0]}) that could run code; "
                f"attnlab only loads tensors and plain data ({_RESAVE})")
    if protocol is not None and protocol > 2 and (complete or names):
        return (f"cannot read {path}: it was pickled with protocol {protocol}, which torch's safe loader "
                f"(weights_only) does not read; {_RESAVE} (torch.save's default protocol is 2)")
    zipped = head.startswith(b"PK\x03\x04")
    if zipped:
        if not _is_zip(path):
            return (f"cannot read {path}: the file is truncated or corrupt (it starts as a zip archive, "
                    f"the torch.save format, but its end is missing or damaged); {_AGAIN}")
        if _zip_without_pickle(path):
            return f"{path} is not a checkpoint: it is a zip archive without the data.pkl of torch.save; pass {EXPECTED}"
    looks = None if complete else _looks_like(head, path)
    if looks is not None:
        return f"{path} is not a checkpoint: it looks like {looks}; pass {EXPECTED}"
    if complete and not zipped:  # torch.load reads pickles only behind torch.save's header
        return f"cannot read {path}: it is a plain pickle (pickle.dump), not a torch.save file; {_RESAVE}"
    reason = "it ends before its data does" if isinstance(error, EOFError) else first_sentence(error)
    return f"cannot read {path}: the file is truncated or corrupt ({reason}); {_AGAIN}"


def safetensors_message(path: Path, error: BaseException) -> str:
    """The one line for a ``.safetensors`` file safetensors could not read."""
    if _is_zip(path):
        return f"{path} is not a safetensors file: it is a torch.save file; rename it to .pt"
    return (f"cannot read {path}: not a valid safetensors file, truncated or corrupt "
            f"({first_sentence(error)}); {_AGAIN}")
