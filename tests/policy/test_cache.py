"""rules.policy.cache: checked bundles and schema checks kept by hash, every entry verified before use and a
mismatching one ignored and rebuilt (issue 18)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from rules.policy import cache, loader, schema_check
from rules.policy.loader import load_bundle
from tests.support import ROOT

POLICIES = ROOT / "policies"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("DACP_CACHE_DIR", str(d))
    return d


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    for p in POLICIES.glob("*.yaml"):
        shutil.copy(p, d / p.name)
    return d


def no_checks(monkeypatch) -> None:
    """Make a bundle that is checked again fail loudly: what loads must come from the cache."""
    def refuse(*_a, **_k):
        raise AssertionError("the bundle was checked again")
    monkeypatch.setattr(loader, "check_document", refuse)


def entry(cache_dir: Path) -> Path:
    (found,) = cache_dir.glob("bundle-*.pickle")
    return found


def test_a_checked_bundle_comes_from_the_cache_the_second_time(cache_dir, bundle_dir, monkeypatch):
    first = load_bundle(bundle_dir)
    assert entry(cache_dir).name.startswith(f"bundle-{first.hash}-")
    no_checks(monkeypatch)
    assert load_bundle(bundle_dir) == first


def test_the_entry_is_private_and_its_header_names_hash_code_and_payload(cache_dir, bundle_dir):
    b = load_bundle(bundle_dir)
    data = entry(cache_dir).read_bytes()
    head, _, payload = data.partition(b"\n")
    header = json.loads(head)
    assert header == {"format": cache.FORMAT, "bundle": b.hash, "code": cache.code_digest(),
                      "sha256": hashlib.sha256(payload).hexdigest()}
    assert entry(cache_dir).stat().st_mode & 0o077 == 0


def rewrite(path: Path, header: dict, payload: bytes) -> None:
    path.write_bytes(json.dumps(header).encode() + b"\n" + payload)


@pytest.mark.parametrize("damage", ["payload", "header hash", "code", "format", "garbage"])
def test_a_damaged_entry_is_ignored_and_rebuilt(cache_dir, bundle_dir, monkeypatch, damage):
    b = load_bundle(bundle_dir)
    path = entry(cache_dir)
    head, _, payload = path.read_bytes().partition(b"\n")
    header = json.loads(head)
    if damage == "payload":  # flipped bytes: the checksum no longer matches, so it is never unpickled
        payload = payload[:-5] + bytes(x ^ 0xFF for x in payload[-5:])
    elif damage == "header hash":
        header["bundle"] = "0" * 64
    elif damage == "code":
        header["code"] = "0" * 64
    elif damage == "format":
        header["format"] = 0
    if damage == "garbage":
        path.write_bytes(b"not a cache entry")
    else:
        rewrite(path, header, payload)
    unpickled = []
    monkeypatch.setattr(pickle, "loads", lambda data: unpickled.append(1))  # nothing may be unpickled
    assert cache.cached_bundle(b.hash, b.sources) is None
    assert not unpickled
    monkeypatch.undo()
    monkeypatch.setenv("DACP_CACHE_DIR", str(cache_dir))
    assert load_bundle(bundle_dir) == b  # rebuilt ...
    assert cache.cached_bundle(b.hash, b.sources) == b  # ... and kept again


def test_an_entry_of_another_bundle_under_this_hash_is_not_trusted(cache_dir, bundle_dir):
    """A well-formed entry (checksum right) holding another bundle, or these files' bundle with another hash,
    is refused: the object must be this hash's bundle, from these very files."""
    b = load_bundle(bundle_dir)
    path = entry(cache_dir)
    for other in (replace(b, hash="f" * 64), replace(b, sources={**b.sources, "limits.yaml": "kind: limits\n"}),
                  {"not": "a bundle"}):
        payload = pickle.dumps(other)
        rewrite(path, {"format": cache.FORMAT, "bundle": b.hash, "code": cache.code_digest(),
                       "sha256": hashlib.sha256(payload).hexdigest()}, payload)
        assert cache.cached_bundle(b.hash, b.sources) is None


def test_the_same_hash_from_other_text_is_rebuilt_with_its_own_lines(cache_dir, bundle_dir, monkeypatch):
    """Comments change no hash but move the lines a trace cites: the stored sources must be these files."""
    b = load_bundle(bundle_dir)
    text = (bundle_dir / "eligibility.yaml").read_text()
    (bundle_dir / "eligibility.yaml").write_text("# a comment\n# and another\n" + text)
    again = load_bundle(bundle_dir)
    assert again.hash == b.hash
    assert again.criteria[0].src.line == b.criteria[0].src.line + 2
    no_checks(monkeypatch)
    assert load_bundle(bundle_dir) == again


def test_an_invalid_bundle_is_never_cached(cache_dir, bundle_dir):
    (bundle_dir / "limits.yaml").write_text((bundle_dir / "limits.yaml").read_text().replace("max_share: 0.50",
                                                                                             "max_share: 1.5"))
    with pytest.raises(loader.PolicyError):
        load_bundle(bundle_dir)
    assert not list(cache_dir.glob("bundle-*"))


def test_the_code_digest_names_the_checking_code_and_the_schemas():
    names = {p.name for p in cache._CODE}
    assert {"loader.py", "cross_checks.py", "model.py", "yaml_reader.py", "values.py", "policy.schema.json"} <= names


def test_off_or_unsafe_cache_directories_are_not_used(tmp_path, bundle_dir, monkeypatch):
    monkeypatch.setenv("DACP_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    load_bundle(bundle_dir)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # others could plant an entry
    monkeypatch.setenv("DACP_CACHE_DIR", str(shared))
    assert cache.cache_dir() is None
    load_bundle(bundle_dir)
    assert not list(shared.iterdir())


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, bundle_dir, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("DACP_CACHE_DIR", str(blocked / "cache"))  # under a file: cannot be made
    assert load_bundle(bundle_dir).hash


def test_a_schema_is_checked_against_its_meta_schema_once_per_text(cache_dir, monkeypatch):
    schema_check.schema.cache_clear()
    schema_check.validator.cache_clear()
    text = (schema_check.SCHEMA_DIR / "query.schema.json").read_text()
    assert not cache.schema_checked("query", text)
    schema_check.schema("query")
    assert cache.schema_checked("query", text)
    assert not cache.schema_checked("query", text + " ")  # another text: checked again
    (marker,) = cache_dir.glob("schema-query-*.checked")
    marker.write_text("forged")  # a marker must name itself
    assert not cache.schema_checked("query", text)
    schema_check.schema.cache_clear()


def test_exact_texts_checked_before_are_not_even_parsed(cache_dir, bundle_dir, monkeypatch):
    b = load_bundle(bundle_dir)
    (ref,) = cache_dir.glob("sources-*.ref")
    assert ref.read_text() == b.hash
    monkeypatch.setattr(loader, "load_yaml_text", lambda *_a: (_ for _ in ()).throw(AssertionError("parsed")))
    assert load_bundle(bundle_dir) == b


def test_the_texts_index_only_points_at_an_entry_that_must_hold_these_texts(cache_dir, bundle_dir, monkeypatch):
    """The index names a hash; the entry under it must still pass every check, its sources these very texts."""
    b = load_bundle(bundle_dir)
    (ref,) = cache_dir.glob("sources-*.ref")
    (bundle_dir / "limits.yaml").write_text((bundle_dir / "limits.yaml").read_text() + "# other text\n")
    other = load_bundle(bundle_dir)  # the same hash from other text: its own entry, its own index
    refs = sorted(cache_dir.glob("sources-*.ref"))
    assert len(refs) == 2 and all(r.read_text() == b.hash for r in refs)
    for bad in ("f" * 64, "not a hash", ""):
        for r in refs:
            r.write_text(bad)
        assert cache.cached_bundle_of(other.sources) is None
    entry(cache_dir).unlink()
    ref.write_text(b.hash)  # an index whose entry is gone: a miss, the bundle checked again
    assert load_bundle(bundle_dir) == other
