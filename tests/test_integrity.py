"""The integrity manifest and --verify: every dump directory's dump has a manifest of what was
written, renamed with it; --verify finds a flipped byte and names its range, says when there is
no manifest, and a dump cut short has a manifest that says so. Over SSH: tests/test_ssh_target.py."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import integrity
from collector.formats.elfcore import write_elf
from collector.formats.kdump import write_kdump
from collector.integrity import (
    EXIT_DAMAGED,
    EXIT_INTACT,
    HOLD_BYTES,
    MANIFEST_SUFFIX,
    HashingFile,
    Manifest,
    VerifyOptions,
    verify,
)
from collector.pipeline.pages import PageCompressor
from collector.progress import LineProgress
from collector.scan.classify import PageClassifier
from collector.source.vmcore import Vmcore
from tests.conftest import run_save, save_in_process
from tests.support.dumpcheck import dump_files

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
# Small chunks and blocks: a few writes cover many of them.
CHUNK, BLOCK = 64, 16
HEAD = 2 * BLOCK  # hashed when the manifest is made


class ModelFile:
    """A TargetFile over a bytearray, as a file system keeps it: writes past the end extend it
    with zeros between; ``reserve`` extends it (posix_fallocate) when ``reserve_extends``; the
    write numbered ``fail_at`` lands only its first ``landed`` bytes, then raises ENOSPC. With
    ``lagging``, as over SFTP, a write lands only when the next one is sent, and a failure
    loses the one before it too."""

    def __init__(self, reserve_extends: bool = True, fail_at: int | None = None, landed: int = 0,
                 lagging: bool = False) -> None:
        self.data = bytearray()
        self.reserve_extends = reserve_extends
        self.fail_at, self.landed, self.lagging = fail_at, landed, lagging
        self.writes = 0
        self.pending: tuple[int, bytes] | None = None

    def _land(self, offset: int, data: bytes) -> None:
        if data:
            self.data.extend(bytes(max(0, offset + len(data) - len(self.data))))
            self.data[offset:offset + len(data)] = data

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        failing = self.writes == self.fail_at
        self.writes += 1
        if failing:
            self.pending = None
            self._land(offset, data[:self.landed])
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.lagging:
            self.pending, previous = (offset, data), self.pending
            if previous:
                self._land(*previous)
        else:
            self._land(offset, data)

    def reserve(self, offset: int, length: int) -> None:
        if self.reserve_extends:
            self.data.extend(bytes(max(0, offset + length - len(self.data))))

    def sync(self) -> None:
        if self.pending:
            self._land(*self.pending)
            self.pending = None

    def close(self) -> None:
        pass


def chunk_hashes(data: bytes, chunk_size: int, block_size: int) -> list[str]:
    """Each chunk's SHA-256 of its blocks' SHA-256 digests, as the README defines them."""
    def chunk(data: bytes) -> str:
        blocks = [hashlib.sha256(data[i:i + block_size]).digest() for i in range(0, len(data), block_size)]
        return hashlib.sha256(b"".join(blocks)).hexdigest()
    return [chunk(data[i:i + chunk_size]) for i in range(0, len(data), chunk_size)]


def hashing_file(model: ModelFile, hold_bytes: int = HOLD_BYTES) -> HashingFile:
    return HashingFile(model, chunk_size=CHUNK, block_size=BLOCK, head_bytes=HEAD, hold_bytes=hold_bytes)


def check_file(tmp_path: Path, data: bytes, manifest: Manifest) -> tuple[int, str]:
    dump = tmp_path / "vmcore"
    dump.write_bytes(data)
    (tmp_path / f"vmcore{MANIFEST_SUFFIX}").write_bytes(manifest.to_json())
    verdict = verify(VerifyOptions(str(dump)))
    return verdict.exit_code, verdict.text


writes = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 40 * CHUNK), st.binary(min_size=0, max_size=3 * CHUNK)),
    st.tuples(st.just("reserve"), st.integers(0, 40 * CHUNK), st.integers(0, 3 * CHUNK))), max_size=40)


@given(writes, st.booleans())
def test_any_writes_with_overlaps_give_the_manifest_of_the_final_file(tmp_path_factory, operations, reserve_extends):
    model = ModelFile(reserve_extends)
    hashed = hashing_file(model)
    whole: set[int] = set()   # blocks wholly written at some point (past the head)
    rewritten = set()         # of those, blocks written to again afterwards
    covered = bytearray(41 * CHUNK + 3 * CHUNK)
    for kind, offset, payload in operations:
        if kind == "reserve":
            hashed.reserve(offset, payload)
            continue
        touched = range(offset // BLOCK, -(-(offset + len(payload)) // BLOCK))
        rewritten |= whole & set(touched)
        hashed.write_at(offset, payload)
        covered[offset:offset + len(payload)] = b"\1" * len(payload)
        whole |= {i for i in touched if i * BLOCK >= HEAD and all(covered[i * BLOCK:(i + 1) * BLOCK])}
    hashed.close()
    manifest = hashed.manifest(True)
    final = bytes(model.data)
    written_end = max([offset + len(p) for kind, offset, p in operations if kind == "write" and p], default=0)
    assert manifest.size == written_end
    expected = chunk_hashes(final[:written_end], CHUNK, BLOCK)
    assert [i for i, chunk in enumerate(manifest.chunks) if chunk is None] == sorted({
        block * BLOCK // CHUNK for block in rewritten})
    assert all(chunk in (None, want) for chunk, want in zip(manifest.chunks, expected, strict=True))
    assert check_file(tmp_path_factory.mktemp("check"), final, manifest)[0] == EXIT_INTACT


@given(writes, st.integers(0, 39), st.integers(0, 3 * CHUNK), st.booleans())
def test_a_write_that_fails_midway_never_makes_the_file_look_damaged(tmp_path_factory, operations, fail_at, landed,
                                                                       lagging):
    model = ModelFile(fail_at=fail_at, landed=landed, lagging=lagging)
    hashed = hashing_file(model)
    for kind, offset, payload in operations:
        try:
            if kind == "reserve":
                hashed.reserve(offset, payload)
            else:
                hashed.write_at(offset, payload)
        except OSError:
            pass  # as the writers do: the dump goes on to its header, incomplete
    hashed.sync()
    hashed.close()
    manifest = hashed.manifest(False)
    code, text = check_file(tmp_path_factory.mktemp("check"), bytes(model.data), manifest)
    assert code == EXIT_INTACT, text


def test_the_header_written_again_at_the_end_is_hashed_as_it_ends(tmp_path):
    model = ModelFile()
    hashed = hashing_file(model)
    hashed.write_at(0, b"h" * CHUNK)  # the first chunk wholly written, as by an ELF header
    hashed.write_at(CHUNK, os.urandom(4 * CHUNK))
    hashed.write_at(0, b"H" * 16)     # the final header
    hashed.write_at(BLOCK, b"S" * 8)  # and sub-header
    hashed.close()
    manifest = hashed.manifest(True)
    assert list(manifest.chunks) == chunk_hashes(bytes(model.data), CHUNK, BLOCK)


def test_bytes_written_out_of_order_past_the_hold_limit_give_up_a_chunk_not_memory(tmp_path):
    """Descriptors written long before their neighbours are kept until their block is whole;
    past the limit, the chunk holding most of them is not checked rather than memory grown."""
    model = ModelFile()
    hashed = hashing_file(model, hold_bytes=2000)
    for chunk in (2, 1, 3):  # scattered bytes in each block of chunks 1-3, chunk 2 holding most
        for at in range(chunk * CHUNK, (chunk + 1) * CHUNK, BLOCK if chunk != 2 else 4):
            hashed.write_at(at, b"d")
    hashed.write_at(0, os.urandom(5 * CHUNK))  # everything written in order
    hashed.close()
    manifest = hashed.manifest(True)
    assert [chunk is None for chunk in manifest.chunks] == [False, False, True, False, False]
    assert check_file(tmp_path, bytes(model.data), manifest)[0] == EXIT_INTACT


class KeepingSink:
    """A Sink that holds every buffer written to it, as HashingFile does (a memoryview: resizing
    the buffer raises BufferError), with a copy of what it held when written."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, memoryview, bytes]] = []

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.kept.append((offset, memoryview(data), bytes(data)))

    def reserve(self, offset: int, length: int) -> None:
        pass


@pytest.mark.vmcore(random_pages=2048, zero_pages=256)
@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_the_dump_writers_never_change_a_buffer_after_writing_it(vmcore, fmt):
    """HashingFile hashes the writers' buffers, not copies, after write_at returns."""
    sink = KeepingSink()
    with Vmcore(str(vmcore)) as source:
        classifier = PageClassifier(source, 1, lambda message: None)
        if fmt == "elf":
            write_elf(sink, source, classifier, LineProgress(quiet=True))
        else:
            compressor = PageCompressor("zstd", None, 1)
            try:
                write_kdump(sink, source, classifier, compressor, LineProgress(quiet=True))
            finally:
                compressor.close()
    changed = [offset for offset, data, written in sink.kept if data != written]
    assert sum(len(written) for _, _, written in sink.kept) > 8 << 20 and changed == []


def test_a_rewritten_manifest_chunk_is_caught_by_the_root_hash(tmp_path):
    data = os.urandom(3 * CHUNK)
    manifest = Manifest(len(data), True, tuple(chunk_hashes(data, CHUNK, BLOCK)), CHUNK, BLOCK)
    assert check_file(tmp_path, data, manifest)[0] == EXIT_INTACT
    forged = json.loads(manifest.to_json())
    forged["chunks"][1] = hashlib.sha256(b"other").hexdigest()
    (tmp_path / f"vmcore{MANIFEST_SUFFIX}").write_text(json.dumps(forged))
    verdict = verify(VerifyOptions(str(tmp_path / "vmcore")))
    assert verdict.exit_code == EXIT_DAMAGED and "root hash does not match" in verdict.text


def only_dump_dir(root: Path) -> Path:
    (directory,) = root.iterdir()
    return directory


def run_verify(path: Path):
    return run_save("--verify", str(path))


@pytest.mark.vmcore(random_pages=2048, zero_pages=256)
def test_a_local_dump_verifies_and_one_flipped_byte_is_found_with_its_range(vmcore, tmp_path):
    run_save(str(vmcore), str(tmp_path / "dumps"), "--quiet", check=True)
    directory = only_dump_dir(tmp_path / "dumps")
    assert "vmcore.manifest.json" in dump_files(directory)
    proc = run_verify(directory)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1 and "intact" in proc.stdout, proc
    dump = directory / "vmcore"
    flipped = bytearray(dump.read_bytes())
    flipped[5_000_000] ^= 1
    dump.write_bytes(flipped)
    proc = run_verify(dump)
    assert proc.returncode == 1 and "DAMAGED: bytes 4194304-8388607" in proc.stdout, proc


def test_verify_without_a_manifest_or_with_a_bad_path_is_one_line_exit_2(vmcore, tmp_path):
    proc = run_verify(vmcore)
    assert proc.returncode == 2 and "no manifest" in proc.stderr and "Traceback" not in proc.stderr, proc
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, words in [(tmp_path / "nowhere", "no such file"), (empty, "no dump in this directory"),
                       (Path("/dev/null"), "not a regular file")]:
        proc = run_verify(bad)
        assert proc.returncode == 2 and words in proc.stderr and proc.stderr.count("\n") == 1, proc


@pytest.mark.vmcore(random_pages=512)
def test_a_flattened_stream_has_the_manifest_of_the_stream_as_sent(vmcore, tmp_path):
    run_save(str(vmcore), str(tmp_path / "dumps"), "--format", "flat", "--quiet", check=True)
    directory = only_dump_dir(tmp_path / "dumps")
    assert {"vmcore.flat", "vmcore.flat.manifest.json"} <= set(dump_files(directory))
    proc = run_verify(directory / "vmcore.flat")
    assert proc.returncode == 0 and "intact" in proc.stdout, proc


@pytest.mark.vmcore(random_pages=512)
def test_a_failure_of_the_hashing_costs_the_manifest_not_the_dump(vmcore, tmp_path, monkeypatch, capsys):
    class Broken(integrity.FileHasher):  # as when the hashing runs out of memory
        def result(self):
            super().result()
            raise MemoryError("no room")
    monkeypatch.setattr(integrity, "FileHasher", Broken)
    assert save_in_process(str(vmcore), str(tmp_path / "dumps")) == 0
    directory = only_dump_dir(tmp_path / "dumps")
    # The dump committed, complete, under its final name; its manifest says why it is none.
    assert {"vmcore", "vmcore.manifest.json"} <= set(dump_files(directory))
    assert not any("incomplete" in name for name in dump_files(directory))
    err = capsys.readouterr().err
    assert "hashing the dump failed (MemoryError: no room)" in err and "cannot be checked with --verify" in err
    proc = run_verify(directory)
    assert proc.returncode == 2 and "could not make the manifest (hashing the dump failed" in proc.stderr, proc


@needs_root
@pytest.mark.vmcore(random_pages=1024)
def test_a_dump_cut_short_has_a_manifest_that_says_incomplete_and_verifies(vmcore, small_tmpfs):
    proc = run_save(str(vmcore), str(small_tmpfs), "--quiet")
    assert proc.returncode == 3, proc.stderr
    directory = only_dump_dir(small_tmpfs)
    manifest = json.loads((directory / f"vmcore-incomplete{MANIFEST_SUFFIX}").read_bytes())
    assert manifest["complete"] is False
    proc = run_verify(directory)
    assert proc.returncode == 0 and "INCOMPLETE" in proc.stdout, proc
