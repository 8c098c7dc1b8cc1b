"""vmcore-collector status checks for real: the capture image is one build-initramfs made (its
manifest) for the running kernel after the configuration's last change, the reservation holds
what the capture needs, the SSH key and known_hosts are there, and a probe file is created and
removed on each target through the capture's own target classes (sshd on loopback, local
directories), leaving nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from collector.capture import arm
from tests.support.sshd import SSHD, Sshd, keygen, start_sshd

MIB = 1 << 20


def make_image(tmp_path: Path, config_text: str, manifest: str | None = None) -> Path:
    """A zstd cpio like build-initramfs's: the configuration and (unless "") the manifest."""
    tree = tmp_path / "tree"
    (tree / "etc" / "vmcore-collector").mkdir(parents=True)
    (tree / "etc" / "vmcore-collector.conf").write_text(config_text)
    if manifest != "":
        (tree / arm.IMAGE_MANIFEST).write_text(manifest or arm._image_manifest_text(os.uname().release))
    image = tmp_path / "capture.img"
    subprocess.run(f"find . | cpio -o -H newc --quiet | zstd -q -o {image}", shell=True, cwd=tree, check=True)
    return image


def status(tmp_path: Path, config_text: str, image: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str], reserved: int = 256 * MIB,
           config_newer: bool = False) -> tuple[int, str]:
    monkeypatch.setattr(arm, "crash_kernel_reserved", lambda: reserved)
    monkeypatch.setattr(arm, "crash_kernel_loaded", lambda: True)
    monkeypatch.setattr(arm.estimation, "kernel_image_bytes", lambda: 40 * MIB)
    conf = tmp_path / "vmcore-collector.conf"
    conf.write_text(config_text)
    if image.exists():
        shift = 1 if config_newer else -1
        os.utime(conf, (image.stat().st_mtime + shift, image.stat().st_mtime + shift))
    code = arm.main(["status", "--config", str(conf), "--initrd", str(image)])
    return code, capsys.readouterr().out


@pytest.fixture
def crash_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "crash"
    directory.mkdir()
    return directory


def test_an_8_byte_garbage_initramfs_fails(tmp_path: Path, crash_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "capture.img"
    image.write_bytes(b"garbage!")
    code, out = status(tmp_path, f"target = path {crash_dir}\n", image, monkeypatch, capsys)
    assert f"FAIL initramfs: {image} was not built by vmcore-collector" in out
    assert "rebuild it (vmcore-collector build-initramfs)" in out
    assert code == 1


def test_an_initramfs_without_our_manifest_fails(tmp_path: Path, crash_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path, f"target = path {crash_dir}\n", manifest="")
    code, out = status(tmp_path, f"target = path {crash_dir}\n", image, monkeypatch, capsys)
    assert "was not built by vmcore-collector (no /etc/vmcore-collector/image.json inside)" in out
    assert code == 1


def test_an_image_for_another_kernel_fails(tmp_path: Path, crash_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.dumps({"built_by": "vmcore-collector 0.1", "kernel_version": "5.10.0-99-amd64", "built": "x"})
    image = make_image(tmp_path, f"target = path {crash_dir}\n", manifest)
    code, out = status(tmp_path, f"target = path {crash_dir}\n", image, monkeypatch, capsys)
    assert f"FAIL initramfs: {image} is for kernel 5.10.0-99-amd64, this one is {os.uname().release}" in out
    assert code == 1


def test_an_image_older_than_the_configuration_fails(tmp_path: Path, crash_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path, f"target = path {crash_dir}\n")
    code, out = status(tmp_path, f"target = path {crash_dir}\n", image, monkeypatch, capsys, config_newer=True)
    assert f"FAIL initramfs: {image} is older than {tmp_path / 'vmcore-collector.conf'}" in out
    assert code == 1


def test_a_good_image_names_its_builder_and_kernel_and_a_local_probe_leaves_nothing(
        tmp_path: Path, crash_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path, f"target = disk /dev/null ext4 {crash_dir}\n")
    code, out = status(tmp_path, f"target = path {crash_dir}\n", image, monkeypatch, capsys)
    assert f"ok   initramfs: {image} " in out and "built by vmcore-collector" in out
    assert f"for {os.uname().release} on " in out
    assert "ok   crashkernel: the capture needs about " in out and "256 MiB reserved: enough" in out
    assert f"ok   target path {crash_dir}: probe file created and removed" in out
    assert list(crash_dir.iterdir()) == []
    assert code == 0, out


def test_a_reservation_smaller_than_the_capture_needs_fails(tmp_path: Path, crash_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path, f"target = disk /dev/null ext4 {crash_dir}\n")
    code, out = status(tmp_path, f"target = path {crash_dir}\n", image, monkeypatch, capsys, reserved=64 * MIB)
    assert "FAIL crashkernel: the capture needs about " in out
    assert "64 MiB reserved: NOT enough, boot with crashkernel=" in out
    assert code == 1


def test_a_read_only_target_fails_its_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)], check=True)
    try:
        image = make_image(tmp_path, f"target = disk /dev/null ext4 {read_only}\n")
        code, out = status(tmp_path, f"target = path {read_only}\n", image, monkeypatch, capsys)
    finally:
        subprocess.run(["umount", str(read_only)], check=True)
    assert f"FAIL target path {read_only}: probe file in {read_only}: Read-only file system" in out
    assert code == 1


def test_a_directory_not_made_yet_is_not_probed_nor_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "not-yet"
    image = make_image(tmp_path, f"target = disk /dev/null ext4 {missing}\n")
    code, out = status(tmp_path, f"target = path {missing}\n", image, monkeypatch, capsys)
    assert f"--   target path {missing}: not probed from here: {missing} does not exist yet" in out
    assert not missing.exists()
    assert code == 0, out


# SSH, against a real sshd on loopback ------------------------------------------------------------

pytest_ssh = pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server is not installed (./dev setup)")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def ssh_config(server: Sshd, directory: Path, key: Path, known_hosts: Path) -> str:
    return (f"target = ssh {server.user}@127.0.0.1:{server.port} {directory}\n"
            f"ssh_key = {key}\nknown_hosts = {known_hosts}\n")


@pytest_ssh
def test_ssh_key_known_hosts_and_a_probe_over_sftp(sshd: Sshd, tmp_path: Path, crash_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    text = ssh_config(sshd, crash_dir, sshd.client_key, sshd.known_hosts)
    code, out = status(tmp_path, text, make_image(tmp_path, text), monkeypatch, capsys)
    assert f"ok   ssh key: {sshd.client_key} readable" in out
    assert f"ok   known_hosts: {sshd.known_hosts} holds the key of 127.0.0.1" in out
    assert f"ok   target ssh {sshd.user}@127.0.0.1:{sshd.port} {crash_dir}: probe file created and removed" in out
    assert list(crash_dir.iterdir()) == []
    assert code == 0, out


@pytest_ssh
def test_a_missing_ssh_key_fails(sshd: Sshd, tmp_path: Path, crash_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    text = ssh_config(sshd, crash_dir, tmp_path / "no-key", sshd.known_hosts)
    code, out = status(tmp_path, text, make_image(tmp_path, text), monkeypatch, capsys)
    assert f"FAIL ssh key: {tmp_path / 'no-key'}: No such file or directory" in out
    assert code == 1


@pytest_ssh
def test_a_host_key_missing_from_known_hosts_fails(sshd: Sshd, tmp_path: Path, crash_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port + 1} {sshd.host_public_key}\n")  # another server's entry
    text = ssh_config(sshd, crash_dir, sshd.client_key, known_hosts)
    code, out = status(tmp_path, text, make_image(tmp_path, text), monkeypatch, capsys)
    assert f"FAIL known_hosts: {known_hosts} holds no host key for [127.0.0.1]:{sshd.port}" in out
    assert f"FAIL target ssh {sshd.user}@127.0.0.1:{sshd.port} {crash_dir}: " in out  # nor does the probe connect
    assert code == 1


@pytest_ssh
def test_a_key_the_server_does_not_accept_fails_the_probe(sshd: Sshd, tmp_path: Path, crash_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other_key"
    keygen(other)
    text = ssh_config(sshd, crash_dir, other, sshd.known_hosts)
    code, out = status(tmp_path, text, make_image(tmp_path, text), monkeypatch, capsys)
    assert f"ok   ssh key: {other} readable" in out
    probe_line = next(line for line in out.splitlines() if line.startswith(f"FAIL target ssh {sshd.user}@"))
    assert f"the server refused key {other}" in probe_line
    assert code == 1
