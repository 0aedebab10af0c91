"""Signed checkpoints (rules/audit/checkpoint.py): published signed-note and checkpoint examples,
round trips, and every kind of tampering refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.audit.checkpoint import (Checkpoint, CheckpointError, NoteError, Signer, Verifier, key_id,
                                    open_checkpoint, open_note, sign_checkpoint, sign_note)

# golang.org/x/mod/sumdb/note known keys and signatures:
# https://github.com/golang/mod/blob/fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db/sumdb/note/note_test.go
# (TestNewVerifier, TestNewSigner, TestSign, TestOpen) and sumdb/note/example_test.go.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6"
             "RyyBwJnAM=\n")
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1"
             "RvMc+QQ=\n")

# The C2SP signed-note spec's example verifier key and note:
# https://github.com/C2SP/C2SP/blob/5ba5ee830903e91240fc6f9f3a7a9293d49e69c9/signed-note.md ("Example")
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTg"
             "K7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
# ... and its opening example, signed by a key the spec does not publish.
SPEC_POEM = ("Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u00e8 subito sera.\n\n"
             "\u2014 quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0"
             "xMcXxj99ihAQwaqP3ZekRwNtIc=\n")

# The C2SP tlog-checkpoint spec's example (key not published):
# https://github.com/C2SP/C2SP/blob/5ba5ee830903e91240fc6f9f3a7a9293d49e69c9/tlog-checkpoint.md
SPEC_CHECKPOINT = ("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
                   "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2"
                   "q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n")

# golang.org/x/mod/sumdb/tlog's tree note (the checkpoint format's ancestor), with the RFC 6962 leaf hash
# of "hello world" as its root: https://github.com/golang/mod/blob/fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db/
# sumdb/tlog/note_test.go (TestFormatTree)
GO_TREE = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"


# --- published examples ------------------------------------------------------------------------

def test_go_known_key_signs_exactly_the_published_note():
    signer = Signer.parse(PETER_SKEY)
    assert signer.name == "PeterNeumann" and signer.key_id.hex() == "c74f20a3"
    assert signer.key_text() == PETER_SKEY
    assert signer.verifier().key_text() == PETER_VKEY == str(Verifier.parse(PETER_VKEY))
    assert sign_note(GO_TEXT, [signer]) == GO_TEXT + "\n" + PETER_SIG  # Ed25519 is deterministic


def test_go_open_one_two_or_no_known_signatures():
    peter, enoch = Verifier.parse(PETER_VKEY), Verifier.parse(ENOCH_VKEY)
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(note, [peter]) == (GO_TEXT, ["PeterNeumann"])
    assert open_note(note.encode(), [peter, enoch]) == (GO_TEXT, ["PeterNeumann", "EnochRoot"])
    assert open_note(GO_TEXT + "\n" + PETER_SIG * 2 + ENOCH_SIG * 2, [peter]) == (GO_TEXT, ["PeterNeumann"])
    with pytest.raises(NoteError, match=r"not signed by any known key \(signed by PeterNeumann\+c74f20a3, "
                                        r"EnochRoot\+af0cfe78; known: none\)"):
        open_note(note, [])


def test_spec_examples():
    assert open_note(SPEC_NOTE, [Verifier.parse(SPEC_VKEY)]) == ("This is an example message.\n", ["example.com/foo"])
    # The poem's text holds a blank line: the text ends at the *last* blank line.
    with pytest.raises(NoteError, match=r"signed by quasimodo\.example/salvatore\+"):
        open_note(SPEC_POEM, [Verifier.parse(SPEC_VKEY)])
    text = SPEC_CHECKPOINT[:SPEC_CHECKPOINT.index("\n\n") + 1]
    cp = Checkpoint.parse(text)
    assert (cp.origin, cp.size, cp.root.hex()[:8], cp.extensions) == ("example.com/behind-the-sofa", 20852163,
                                                                      "0ac5186a", ())
    assert cp.body() == text
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_checkpoint(SPEC_CHECKPOINT, [Signer.generate("example.com/behind-the-sofa").verifier()])


def test_go_tree_note_body():
    root = hashlib.sha256(b"\x00hello world").digest()
    assert Checkpoint("go.sum database tree", 123456789012, root).body() == GO_TREE
    assert Checkpoint.parse(GO_TREE) == Checkpoint("go.sum database tree", 123456789012, root)


def test_key_id_is_the_spec_formula():
    v = Verifier.parse(SPEC_VKEY)
    assert key_id(v.name, v.public_key) == hashlib.sha256(b"example.com/foo\n\x01" + v.public_key).digest()[:4]
    assert v.key_id.hex() == "530d903a"


def test_mangled_keys_are_refused():
    # As golang.org/x/mod/sumdb/note's TestNewVerifier and TestNewSigner: every proper substring of
    # the key text, and every single character changed, is refused.
    for good, parse in ((PETER_VKEY, Verifier.parse), (PETER_SKEY, Signer.parse)):
        for i in range(len(good)):
            for j in range(i + 1, len(good) + 1):
                if (i, j) != (0, len(good)):
                    with pytest.raises(NoteError):
                        parse(good[i:j])
            with pytest.raises(NoteError):
                parse(good[:i] + chr(ord(good[i]) + 1) + good[i + 1:])
    with pytest.raises(NoteError, match="not canonical base64"):  # wrong length key, with adjusted key hash
        Verifier.parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(NoteError, match="not an Ed25519 key"):  # unknown algorithm, with adjusted key hash
        Verifier.parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    with pytest.raises(NoteError, match="lowercase hex"):
        Verifier.parse(PETER_VKEY.replace("c74f20a3", "C74F20A3"))


@pytest.mark.parametrize("note, message", [
    (GO_TEXT, "no blank line"),
    (GO_TEXT + "\n", "no signature lines"),
    (GO_TEXT + "\n" + PETER_SIG[:-1], "does not end in a newline"),
    ("\x01" + GO_TEXT + "\n" + PETER_SIG, "control character"),
    (b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), "not valid UTF-8"),
    (GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"), "is not '\u2014 <key name>"),
    (GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "line 2 of the signature block is not a signature"),
    (GO_TEXT + "\n" + PETER_SIG.replace("\u2014", "-"), "not a signature line"),
    (GO_TEXT + "\n" + PETER_SIG.replace("AM=", "AN="), "not canonical base64"),
    (GO_TEXT + "\n" + PETER_SIG.replace("x08go/", "x08go!"), "not valid base64"),
    (GO_TEXT + "\n" + "\u2014 PeterNeumann x08g\n", "need 5 or more"),
    (GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], "PeterNeumann\\+c74f20a3 is 67 bytes, not a 64"),
    (GO_TEXT + "\n" + PETER_SIG[:60] + "A" + PETER_SIG[61:], "by key PeterNeumann\\+c74f20a3 does not verify"),
    (GO_TEXT + "\n" + "\u2014 PeterNeumann x08go/ZJ\n", "is 2 bytes, not a 64-byte"),
    (GO_TEXT + "\n" + PETER_SIG * 101, "101 signature lines"),
    (GO_TEXT + "\n" + "\u2014 a+b x08go/ZJkuBS9U\n", "contains a space, '\\+'"),
])
def test_malformed_notes_are_refused(note, message):
    with pytest.raises(NoteError, match=message):
        open_note(note, [Verifier.parse(PETER_VKEY)])


def test_unknown_signatures_are_ignored_but_a_bad_known_one_rejects():
    peter = Verifier.parse(PETER_VKEY)
    other = Signer.generate("PeterNeumann")  # same name, other key and so other ID: unknown, ignored
    note = sign_note(GO_TEXT, [other]) + PETER_SIG
    assert open_note(note, [peter]) == (GO_TEXT, ["PeterNeumann"])
    impostor = Verifier(other.name, other.public_key)
    impostor.key_id = peter.key_id  # same name and ID, other key
    with pytest.raises(NoteError, match="ambiguous key"):
        open_note(GO_TEXT + "\n" + PETER_SIG, [peter, impostor])
    with pytest.raises(NoteError, match="does not verify"):
        open_note(GO_TEXT + "\n" + PETER_SIG, [impostor])
    assert open_note(GO_TEXT + "\n" + PETER_SIG, [peter, Verifier.parse(PETER_VKEY)])[1] == ["PeterNeumann"]


def test_sign_note_refuses_bad_text_and_signers():
    s = Signer.generate("example.com/log")
    for text, message in (("abc", "end in a newline"), ("a\tb\n", "control character"), (b"a\n", "string")):
        with pytest.raises(NoteError, match=message):
            sign_note(text, [s])
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("a\n", [])
    with pytest.raises(NoteError, match="share the key"):
        sign_note("a\n", [s, s])
    for name in ("", "a b", "a+b", "a\u00a0b", "a\nb"):
        with pytest.raises(NoteError, match="key name"):
            Signer.generate(name)


# --- checkpoints -------------------------------------------------------------------------------

ROOT = hashlib.sha256(b"root").digest()


@pytest.mark.parametrize("text, message", [
    ("log\n5\n", "2 line"),
    ("log\n5\n" + Checkpoint("x", 0, ROOT).body().split("\n")[2], "does not end in a newline"),
    ("log\n05\nAA==\n", "leading zeros"),
    ("log\n+5\nAA==\n", "not a decimal"),
    ("log\n\u0663\nAA==\n", "not a decimal"),  # an Arabic-Indic digit three
    ("log\n5\nAA==\n", "1 bytes, not 32"),
    ("log\n5\n" + "A" * 43 + "B=\n", "not canonical"),
    ("log\n5\n" + "A" * 43 + "=\n\n", "extension line 1 must be a non-empty"),
    ("\n5\n" + "A" * 43 + "=\n", "origin must be a non-empty"),
    ("log\r\n5\n" + "A" * 43 + "=\n", "control character"),
    ("log\n18446744073709551616\n" + "A" * 43 + "=\n", "2\\*\\*64-1"),
])
def test_malformed_checkpoints_are_refused(text, message):
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.parse(text)


def test_checkpoint_values_are_checked():
    with pytest.raises(CheckpointError):
        Checkpoint("log", -1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("log", True, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("log", 1, ROOT[:31])
    with pytest.raises(CheckpointError):
        Checkpoint("log", 1, ROOT, ("ok", "two\nlines"))


_line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"
                              + "".join(map(chr, range(32)))), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(_line, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), st.lists(_line, max_size=3))
def test_checkpoint_round_trip(origin, size, root, extensions):
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(cp.body()) == cp
    signer, witness = Signer.generate("example.com/log"), Signer.generate("witness.example/w1")
    note = sign_checkpoint(cp, [signer, witness])
    assert open_checkpoint(note, [witness.verifier()]) == (cp, ["witness.example/w1"])
    assert open_checkpoint(note.encode(), [signer.verifier(), witness.verifier()], origin=origin) == \
        (cp, ["example.com/log", "witness.example/w1"])


def test_every_tampering_is_refused():
    signer = Signer.generate("example.com/log")
    vs = [signer.verifier()]
    cp = Checkpoint("example.com/log", 1234, ROOT)
    note = sign_checkpoint(cp, [signer])
    assert open_checkpoint(note, vs, origin="example.com/log") == (cp, ["example.com/log"])
    sig_at = note.index("\u2014") + len("\u2014 example.com/log ") + 10
    tampered = {
        "size": note.replace("\n1234\n", "\n1235\n"),
        "root": note.replace(cp.body().split("\n")[2], Checkpoint("o", 0, bytes(32)).body().split("\n")[2]),
        "origin": note.replace("example.com/log\n1234", "example.com/lag\n1234"),
        "signature byte": note[:sig_at] + ("B" if note[sig_at] != "B" else "C") + note[sig_at + 1:],
        "extra text line": note.replace("\n\n", "\nextension\n\n"),
        "extra signature-block line": note + "trailing\n",
        "blank line removed": note.replace("\n\n", "\n"),
        "signature removed": note[:note.index("\u2014")],
    }
    for what, bad in tampered.items():
        with pytest.raises(NoteError):
            open_checkpoint(bad, vs)
            pytest.fail(f"tampered {what} was accepted")
    with pytest.raises(NoteError):  # the right name, another key
        open_checkpoint(note, [Signer.generate("example.com/log").verifier()])
    with pytest.raises(CheckpointError, match="is for log 'example.com/log', not 'example.com/other'"):
        open_checkpoint(note, vs, origin="example.com/other")
    # A note with a valid signature over text that is not a checkpoint is refused at the parse.
    with pytest.raises(CheckpointError):
        open_checkpoint(sign_note("just text\n", [signer]), vs)


def test_signer_key_text_round_trip():
    s = Signer.generate("example.com/log")
    again = Signer.parse(s.key_text())
    assert again.public_key == s.public_key and again.key_id == s.key_id
    assert Verifier.parse(s.verifier().key_text()) == s.verifier()
    assert "PRIVATE" not in repr(s)
