"""How chunks are stored and read back fast: the pinned zstandard dictionary of small chunks, the batched header
decode of a streaming verify, the block-wise tree growth, and the keyed lookups (``rules.audit.store``)."""

from __future__ import annotations

import fnmatch
import hashlib
import random
import struct
import tomllib
from pathlib import Path

import pytest
import zstandard

from rules.audit import entries as fmt
from rules.audit import merkle, store
from rules.audit.checkpoint import Signer
from rules.audit.log import DecisionLog
from rules.audit.nodes import NODE_LEVEL, Growth
from rules.audit.store import DICTIONARIES, WRITE_DICTIONARY, Chunk, DictionaryError, pack
from rules.errors import StorageError, TamperedError
from tests.support import ROOT
from tests.support.tamper import chunk_row, raw

PINNED = "e568560add888b2dd809d21e84dd23dec56249c3b8a0db7fb873cdfead76e225"  # docs/audit.md says the same
SIGNER = Signer.generate("test-operator")
AT = "2026-12-02T07:20:38.758902Z"


def leaf(entry_id: str, body: bytes = b'{"eligible":true,"trace":[]}') -> bytes:
    return fmt.encode_v1("decision", entry_id, AT, None, body)


@pytest.fixture
def fresh_codecs():
    """Dictionaries and codecs read again (a test changes what the installation holds), and after."""
    def reset():
        store._dictionary.cache_clear()
        store._codecs.__dict__.clear()
    reset()
    yield
    reset()


# -- the dictionary is pinned, shipped, and used only when it is exactly the pinned one -------------------
def test_the_dictionary_is_pinned_by_its_sha256_and_shipped_as_package_data():
    assert DICTIONARIES == {PINNED: "decisions-1.zdict"} and WRITE_DICTIONARY == PINNED
    path = Path(store.__file__).parent / DICTIONARIES[PINNED]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PINNED
    assert path.read_bytes()[:4] == b"\x37\xa4\x30\xec"  # a trained zstd dictionary: its frames carry its id
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["rules"]
    assert any(fnmatch.fnmatch(f"audit/{path.name}", pattern) for pattern in data), data
    assert PINNED in (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")


def test_small_chunks_name_the_dictionary_large_ones_are_plain_and_both_read_back():
    one = [leaf("a")]
    data, ids = pack(one, ["a"])
    assert data[:36] == b"zd1:" + bytes.fromhex(PINNED)
    assert Chunk(0, 1, AT, merkle.leaf_hash(one[0]), ids, data).leaves() == one
    many = [leaf(f"id-{i:05d}", b'{"n":%d,"pad":"%s"}' % (i, b"x" * 200)) for i in range(400)]
    data, ids = pack(many, [f"id-{i:05d}" for i in range(400)])
    assert sum(map(len, many)) >= store.DICTIONARY_BELOW and data[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    chunk = Chunk(0, 400, AT, b"".join(map(merkle.leaf_hash, many)), ids, data)
    assert chunk.leaves() == many and chunk.entry_ids() == [f"id-{i:05d}" for i in range(400)]


def test_chunks_written_before_the_dictionary_still_read():
    leaves = [leaf("a"), leaf("b")]  # the earlier form: one zstd frame, level 3, lengths one struct call each
    data = zstandard.ZstdCompressor(level=3).compress(b"".join([struct.pack(">I", len(x)) for x in leaves] + leaves))
    ids = zstandard.ZstdCompressor(level=3).compress(b"a\nb")
    assert Chunk(0, 2, AT, b"".join(map(merkle.leaf_hash, leaves)), ids, data).leaves() == leaves


def _one_decision_log(path: Path) -> DecisionLog:
    log = DecisionLog(path, origin="test/dict")
    log.append([("decision", "d-1", None, {"eligible": True})])
    log.append([("decision", "d-2", None, {"eligible": False})])
    log.checkpoint(SIGNER)
    assert chunk_row(raw(path), 0).data[:4] == b"zd1:"
    return log


def test_a_chunk_naming_an_unknown_dictionary_fails_verify_and_reads_clearly(tmp_path):
    path = tmp_path / "log.sqlite"
    _one_decision_log(path).close()
    c = raw(path)
    data = chunk_row(c, 1).data
    c.execute("UPDATE tree_chunks SET data = ? WHERE first = 1", (data[:4] + bytes(32) + data[36:],))
    c.close()
    log = DecisionLog(path)
    res = log.verify(None, [SIGNER.verifier()])
    assert not res.ok and res.seq == 2 and "dictionary " + "00" * 32 + ", which this version does not know" in res.problem
    assert log.get("d-1").body == {"eligible": True}  # the other chunk is fine
    with pytest.raises(DictionaryError, match="log entries 2..2: compressed with zstandard dictionary 0000") as e:
        log.get("d-2")
    assert (e.value.code, e.value.exit_code, e.value.http_status, e.value.retryable) == ("dictionary_invalid", 8, 500, False)


def test_a_frame_of_another_dictionary_under_the_pinned_name_is_never_decoded(tmp_path):
    path = tmp_path / "log.sqlite"
    _one_decision_log(path).close()
    c = raw(path)
    ch = chunk_row(c, 1)
    packed = struct.pack(">I", len(ch.leaves()[0])) + ch.leaves()[0]
    other = zstandard.ZstdCompressionDict(b'{"eligible":false,"trace":' * 40, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    forged = b"zd1:" + bytes.fromhex(PINNED) + zstandard.ZstdCompressor(dict_data=other).compress(packed)
    c.execute("UPDATE tree_chunks SET data = ? WHERE first = 1", (forged,))
    c.close()
    log = DecisionLog(path)
    res = log.verify(None, [SIGNER.verifier()])
    assert not res.ok and "its frame was made with zstd dictionary id 0" in res.problem, res.problem
    with pytest.raises(DictionaryError, match="nothing is decoded"):
        log.get("d-2")


@pytest.mark.parametrize("change", ["altered", "missing"])
def test_an_installation_without_the_pinned_dictionary_neither_reads_nor_writes_small_chunks(tmp_path, monkeypatch,
                                                                                              fresh_codecs, change):
    path = tmp_path / "log.sqlite"
    _one_decision_log(path).close()
    installed = tmp_path / "installed"
    installed.mkdir()
    if change == "altered":
        (installed / "decisions-1.zdict").write_bytes(
            (Path(store.__file__).parent / "decisions-1.zdict").read_bytes()[:-1] + b"\x00")
    monkeypatch.setattr(store, "__file__", str(installed / "store.py"))
    store._dictionary.cache_clear()
    store._codecs.__dict__.clear()
    log = DecisionLog(path)
    message = "not the pinned one" if change == "altered" else "missing from this installation"
    res = log.verify(None, [SIGNER.verifier()])
    assert not res.ok and message in res.problem and "reinstall dacp" in res.problem
    with pytest.raises(DictionaryError, match=message):
        log.get("d-1")
    with pytest.raises(DictionaryError, match=message):  # fail closed: nothing written it could not read back
        log.append([("decision", "d-3", None, {"eligible": True})])
    assert log.count() == 2


def test_damaged_chunks_and_id_indexes_are_tampered_not_unavailable(tmp_path):
    path = tmp_path / "log.sqlite"
    _one_decision_log(path).close()
    c = raw(path)
    c.execute("UPDATE tree_chunks SET data = ? WHERE first = 0", (b"not zstd at all",))
    c.execute("UPDATE tree_chunks SET ids = ? WHERE first = 1", (b"\x28\xb5\x2f\xfd garbage",))
    c.close()
    log = DecisionLog(path)
    with pytest.raises(TamperedError, match="does not decompress") as e:
        log.get("d-1")
    assert (e.value.code, e.value.retryable) == ("record_tampered", False)
    res = log.verify(None, [SIGNER.verifier()])
    assert not res.ok and res.seq == 1 and "does not decompress" in res.problem


# -- the batched header decode ------------------------------------------------------------------------------
BAD_LEAVES = {
    "another version": b"dacp-entry/2\n" + b'["decision","a","t",null]\n{}',
    "no newline": b'dacp-entry/1\n["decision","a","t",null]',
    "not JSON": b"dacp-entry/1\n[decision]\n{}",
    "an object of four keys": b'dacp-entry/1\n{"decision":1,"a":2,"t":3,"b":4}\n{}',
    "three fields": b'dacp-entry/1\n["decision","a","t"]\n{}',
    "an id not a string": b'dacp-entry/1\n["decision",7,"t",null]\n{}',
    "a bundle not a string": b'dacp-entry/1\n["decision","a","t",12]\n{}',
}


@pytest.mark.parametrize("name", sorted(BAD_LEAVES))
def test_a_header_of_the_wrong_shape_does_not_decode_one_by_one_or_in_bulk(name):
    good = [leaf("x"), fmt.encode_v1("credit", "y", AT, "ab" * 32, b"{}")]
    want = [("decision", "x", AT, None), ("credit", "y", AT, "ab" * 32)]
    assert [tuple(h) for h in fmt.headers_v1(good)] == [fmt.header_v1(x) for x in good] == want
    assert fmt.headers_v1([*good, BAD_LEAVES[name]]) is None
    with pytest.raises(ValueError):
        fmt.header_v1(BAD_LEAVES[name])


def test_verify_and_reads_name_an_entry_whose_header_does_not_decode(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", origin="test/hdr")
    log.append([("decision", f"ok-{i}", None, {"i": i}) for i in range(3)])
    log.append_leaves([leaf("ok-3"), BAD_LEAVES["an object of four keys"]], ["ok-3", "a"], AT)
    res = log.verify()
    assert not res.ok and res.seq == 5 and "entry 5 does not decode" in res.problem, res.problem
    with pytest.raises(TamperedError, match="entry 5 does not decode"):
        log.get("a")


# -- tree growth by blocks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_growth_reports_the_nodes_and_root_compact_range_does(seed):
    rnd = random.Random(seed)
    hashes = [hashlib.sha256(b"%d" % i).digest() for i in range(rnd.randint(1, 5000))]
    want: list[tuple[int, int, bytes]] = []
    reference = merkle.CompactRange(on_node=lambda lv, ix, h: want.append((lv, ix, h)) if lv >= NODE_LEVEL else None)
    got: list[tuple[int, int, bytes]] = []
    start = rnd.randint(0, len(hashes))  # resumed from a stored frontier, as an append does
    reference.extend(hashes[:start])
    del want[:]
    grow = Growth(start, merkle.CompactRange(start, reference.hashes).hashes, on_node=lambda *n: got.append(n))
    pos = start
    while pos < len(hashes):
        step = rnd.choice([1, 7, 255, 256, 257, 500, 1300])
        grow.extend(hashes[pos:pos + step])
        reference.extend(hashes[pos:pos + step])
        pos += step
        assert grow.size == reference.size and grow.hashes == reference.hashes and grow.root() == reference.root()
    assert sorted(got) == sorted(want)
    assert Growth(0, (), on_node=lambda *n: None).root() == merkle.EMPTY_ROOT


def test_a_checkpoint_inside_a_chunk_is_checked_at_its_size(tmp_path):
    """Checkpoints fall at chunk ends when one log writes them; another copy of the same leaves, chunked
    otherwise, is checked at the same size inside a chunk - and a rewrite before it is still found."""
    leaves = [leaf(f"e-{i:04d}", b'{"i":%d}' % i) for i in range(900)]
    ids = [f"e-{i:04d}" for i in range(900)]
    first = DecisionLog(tmp_path / "a.sqlite", origin="test/same")
    for k in range(0, 300, 100):
        first.append_leaves(leaves[k:k + 100], ids[k:k + 100], AT)
    note = first.checkpoint(SIGNER)
    for name, edit in (("b", None), ("c", 123)):
        other = DecisionLog(tmp_path / f"{name}.sqlite", origin="test/same")
        copy = list(leaves)
        if edit is not None:
            copy[edit] = leaf(ids[edit], b'{"i":-1}')
        other.append_leaves(copy[:50], ids[:50], AT)
        other.append_leaves(copy[50:], ids[50:], AT)  # size 300 is inside this chunk of 850
        other.checkpoint(SIGNER)
        res = other.verify(note, [SIGNER.verifier()])
        if edit is None:
            assert res.ok and res.entries == 900 and res.checked.size == 300, res.render()
        else:
            assert not res.ok and "no longer extends the given checkpoint of size 300" in res.problem, res.render()


# -- keyed lookups --------------------------------------------------------------------------------------------
def test_find_and_leaf_hashes_across_many_chunks(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", origin="test/find")
    ids: list[str] = []
    for k in range(12):
        chunk_ids = [f"id-{k:02d}-{i:03d}" for i in range(1 + 37 * k)]
        log.append([("decision", x, None, {"k": k}) for x in chunk_ids])
        ids += chunk_ids
    log.append([("decision", "0-sorts-first", None, {})])  # an id below every other: not among the nearest 64
    ids.append("0-sorts-first")
    tree = log.tree
    for index in random.Random(1).sample(range(len(ids)), 60) + [0, len(ids) - 1]:
        chunk, pos = tree.find(ids[index])
        assert chunk.first + pos == index and chunk.entry_ids()[pos] == ids[index]
    assert tree.find("id-99-999") is None and tree.find("id-00-0001") is None
    every = b"".join(c.hashes for c in tree.chunks())
    for lo, hi in ((0, 1), (0, len(ids)), (37, 300), (1000, 1000), (len(ids) - 3, len(ids))):
        assert b"".join(tree.leaf_hashes(lo, hi)) == every[32 * lo:32 * hi]
    assert log.verify().ok and log.get("0-sorts-first").index == len(ids) - 1


def test_the_node_reader_gives_the_proofs_the_store_gives_reading_each_node_once(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", origin="test/nodes")
    for k in range(7):
        log.append([("decision", f"n-{k}-{i:03d}", None, {"i": i}) for i in range(150 + 13 * k)])
    tree, size = log.tree, log.count()
    reads: list[tuple[int, int]] = []
    counted = store.NodeReader(lambda lv, ix: reads.append((lv, ix)) or tree.get_node(lv, ix), tree.leaf_hashes)
    for index in (0, 1, 255, 256, 700, size - 1):
        proof = merkle.inclusion_proof(index, size, tree.get_node)
        assert merkle.inclusion_proof(index, size, counted) == proof
        assert merkle.inclusion_proof(index, size, counted) == proof  # the second time from what was read
        merkle.verify_inclusion(tree.leaf_hashes(index, index + 1)[0], index, size, proof, tree.root(size))
    assert len(reads) == len(set(reads)) and all(lv >= NODE_LEVEL for lv, _ in reads)
    chunk = tree.chunk_at(700)
    assert [chunk.leaf(i) for i in range(chunk.count)] == chunk.leaves()
    c = raw(tmp_path / "log.sqlite")
    c.execute("DELETE FROM tree_chunks WHERE first = ?", (chunk.first,))
    c.close()
    with pytest.raises(StorageError, match="leaf hashes are missing"):
        merkle.inclusion_proof(chunk.first + 1, size, store.NodeReader(tree.get_node, tree.leaf_hashes))
    with pytest.raises(StorageError, match="leaf hashes are missing"):
        tree.leaf_hashes(chunk.first - 5, chunk.first + chunk.count + 5)
