"""A cache of checked bundles and of checked schemas, so that a cold ``dacp evaluate`` does not redo them.

Checking a bundle costs far more than deciding: the JSON Schema checks of the schemas themselves against the
meta-schema (~0.12-0.18 s), jsonschema's import, the documents' schema checks, the cross-checks (EIP-55
checksums of the contract addresses, which import eth_utils: ~0.27 s). None of that changes unless the policy
files or the code that checks them do, so the result is kept:

* **a bundle** by its hash: ``bundle-<bundle sha256>-<code digest>.pickle``. The loader parses the files
  (strictly, as always: ~3 ms) and computes the bundle hash first, then asks here. An entry is used only
  when all of these hold, else it is ignored and rebuilt (never trusted): its header names the format, this
  bundle hash and this code digest; the sha256 of its payload matches the header (checked *before* the
  payload is unpickled); the unpickled object is a ``Bundle`` whose ``hash`` is the bundle hash computed from
  the files just read, and whose stored sources are exactly those files (the same hash with other
  whitespace or comments would give other line numbers).
* **the bundle hash of exact file texts**: ``sources-<sha256 of the names and texts>-<code digest>.ref`` holds the
  hash of the bundle built from them, so that a hot start neither parses YAML nor imports PyYAML
  (``cached_bundle_of``). Only an index: the entry it names must still pass every check above, its stored
  sources equal to these texts (and a bundle's hash is a function of its texts under one code digest).
* **a schema's meta-schema check** by the sha256 of the schema's text: ``schema-<name>-<sha256>.checked``.
* **a verified approval** (``rules.lifecycle.approvals.status``): ``approval-<key>.ok``, the key a sha256 over
  everything the verdict read - the bundle hash, the approval settings, the approvers file's bytes and every
  signature file's bytes - so that any change to them is a miss and the signatures are checked again.

The *code digest* is sha256 over the source of the modules that check and build a bundle (``rules/policy/``,
``rules/values.py``) and the schemas, with the Python version: a changed checker or model never reads an
entry an older one wrote.

Where: ``$DACP_CACHE_DIR``, else ``$XDG_CACHE_HOME/dacp``, else ``~/.cache/dacp``; ``DACP_CACHE_DIR=off``
switches the cache off. The directory is made private (0700); one that is not owned by this user or that
others may write to is not used, because an entry is a pickle - trusted as Python trusts its own
``__pycache__``, which is why only the user may write there. Writes are atomic (a temporary file renamed);
a cache that cannot be written is skipped silently: it only saves time.

The compiled form (``rules.engine.compiler``) is not cached: compiling the shipped bundle takes ~0.2 ms.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from rules.policy.model import Bundle

FORMAT = 1
_POLICY_DIR = Path(__file__).resolve().parent
_CODE = (*sorted(_POLICY_DIR.glob("*.py")), _POLICY_DIR.parent / "values.py", *sorted((_POLICY_DIR.parent / "schema").glob("*.json")))


def cache_dir() -> Path | None:
    """The cache directory (made if missing), or None: switched off, or not safe to use."""
    given = os.environ.get("DACP_CACHE_DIR")
    if given is not None and given.strip().lower() in ("off", "0", "no", "false", ""):
        return None
    if given:
        d = Path(given).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = Path(base) / "dacp"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = d.stat()
    except OSError:
        return None
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        return None  # someone else could plant an entry: do without
    return d


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over the checking and building code, the schemas and the Python version."""
    h = hashlib.sha256(f"dacp-bundle-cache/{FORMAT} {sys.version}\n".encode())
    for path in _CODE:
        try:
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            h.update(path.name.encode() + b"\0missing\0")
    return h.hexdigest()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def _bundle_path(d: Path, bundle_hash: str) -> Path:
    return d / f"bundle-{bundle_hash}-{code_digest()[:16]}.pickle"


def cached_bundle(bundle_hash: str, sources: Mapping[str, str]) -> Bundle | None:
    """The checked bundle of these ``sources`` (whose hash is ``bundle_hash``) from the cache, or None."""
    d = cache_dir()
    if d is None:
        return None
    try:
        data = _bundle_path(d, bundle_hash).read_bytes()
    except OSError:
        return None
    head, sep, payload = data.partition(b"\n")
    try:
        header = json.loads(head) if sep else None
    except ValueError:
        return None
    if not (isinstance(header, dict) and header.get("format") == FORMAT and header.get("bundle") == bundle_hash
            and header.get("code") == code_digest() and header.get("sha256") == hashlib.sha256(payload).hexdigest()):
        return None
    import pickle  # here: only a hit needs it

    try:
        bundle: Any = pickle.loads(payload)
    except Exception:  # noqa: BLE001 - an entry that does not load is a miss, whatever the reason
        return None
    if not isinstance(bundle, Bundle) or bundle.hash != bundle_hash or dict(bundle.sources) != dict(sources):
        return None
    return bundle


def store_bundle(bundle: Bundle) -> None:
    """Keep a checked bundle (by its hash); a cache that cannot be written is skipped."""
    d = cache_dir()
    if d is None:
        return
    import pickle

    try:
        payload = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - not picklable: nothing to keep
        return
    header = json.dumps({"format": FORMAT, "bundle": bundle.hash, "code": code_digest(),
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    _write(_bundle_path(d, bundle.hash), header + b"\n" + payload)
    _write(_sources_path(d, bundle.sources), bundle.hash.encode("ascii"))


def _sources_path(d: Path, sources: Mapping[str, str]) -> Path:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode("utf-8") + b"\0" + sources[name].encode("utf-8") + b"\0\0")
    return d / f"sources-{h.hexdigest()}-{code_digest()[:16]}.ref"


def cached_bundle_of(sources: Mapping[str, str]) -> Bundle | None:
    """The checked bundle of exactly these file texts, without parsing them (see the module's docstring)."""
    d = cache_dir()
    if d is None:
        return None
    try:
        ref = _sources_path(d, sources).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    if len(ref) != 64 or not all(c in "0123456789abcdef" for c in ref):
        return None
    return cached_bundle(ref, sources)


def marked(kind: str, key: str) -> bool:
    """Whether ``key`` (a sha256 in hex) was marked done for ``kind`` (``mark``)."""
    d = cache_dir()
    if d is None:
        return False
    path = d / f"{kind}-{key}.ok"
    try:
        return path.read_text(encoding="ascii") == path.name
    except (OSError, UnicodeDecodeError):
        return False


def mark(kind: str, key: str) -> None:
    """Record that ``key`` was done for ``kind`` (a verified approval: rules.lifecycle.approvals.status)."""
    d = cache_dir()
    if d is not None:
        path = d / f"{kind}-{key}.ok"
        _write(path, path.name.encode("ascii"))


def _schema_path(d: Path, name: str, text: str) -> Path:
    return d / f"schema-{name}-{hashlib.sha256(text.encode('utf-8')).hexdigest()}.checked"


def schema_checked(name: str, text: str) -> bool:
    """Whether this exact schema text was checked against its meta-schema before."""
    d = cache_dir()
    if d is None:
        return False
    path = _schema_path(d, name, text)
    try:
        return path.read_text(encoding="ascii") == path.name
    except (OSError, UnicodeDecodeError):
        return False


def mark_schema_checked(name: str, text: str) -> None:
    d = cache_dir()
    if d is not None:
        path = _schema_path(d, name, text)
        _write(path, path.name.encode("ascii"))
