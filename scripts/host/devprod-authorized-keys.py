#!/usr/bin/env python3
"""Installs the developer's current public key in ~/.ssh/authorized_keys, replacing the one devprod put there before.

Run as root by the box's SSM association (components/developer_instance.py)
each time `pulumi up` changes `sshPublicKey`, and every 30 minutes. Lines the
developer added themselves are kept; the devprod key lives between two marker
comments. A key devprod installed before (the one named in the first-boot user
data, or the last one this script wrote) is removed wherever it appears, so a
rotated key stops working.

Root writes into a directory the developer owns, so nothing here follows a
path the developer can change (D10): the home and ~/.ssh are opened with
O_NOFOLLOW and used through their descriptors, the new file is created
O_EXCL under a random name and renamed over the old one (a rename replaces a
symlink or hard link, never writes through it), and the old file is read only
if it is a regular file.

Inputs (environment): DEVPROD_USER, DEVPROD_PUBLIC_KEY; for tests also
DEVPROD_HOME, DEVPROD_UID, DEVPROD_GID (default: the passwd entry),
DEVPROD_STATE_DIR (/var/lib/devprod/keys), DEVPROD_USER_DATA
(/var/lib/cloud/instance/user-data.txt).
Exit codes: 0 installed or already current, 2 bad input, 3 not ready yet
(no such user, or the home volume not mounted: the association retries),
4 refused an unsafe layout (~/.ssh is a symlink or not the developer's).
Python 3.9 compatible: AL2023's system python.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import pwd
import re
import secrets
import shlex
import stat
import struct
import sys
import time

USER = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
COMMENT = re.compile(r"^[A-Za-z0-9@._+=:,/-]{0,100}$")
BEGIN = "# devprod: managed key below (sshPublicKey in the stack config); replaced on every pulumi up"
END = "# devprod: end of managed key"
HOME_READY = ".devprod-home"  # written by the first-boot script once the home volume is mounted
MAX_READ = 1 << 20


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} devprod-authorized-keys: {message}", flush=True)


def validate_key(line: str) -> tuple:
    """(type, blob) of one bare OpenSSH public key line (rule I1, re-checked on the box)."""
    parts = line.strip().split(" ")
    if parts[0] not in KEY_TYPES:
        raise Refused(2, f"key type {parts[0][:40]!r} is not one of {', '.join(KEY_TYPES)} (no options, no private key)")
    if "\n" in line.strip() or len(parts) < 2 or len(parts) > 3:
        raise Refused(2, "the key must be one line: TYPE BASE64 [COMMENT]")
    key_type, blob = parts[0], parts[1]
    if len(parts) == 3 and not COMMENT.match(parts[2]):
        raise Refused(2, "the key comment has characters outside [A-Za-z0-9@._+=:,/-]")
    try:
        data = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", data[:4])
        inner = data[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        raise Refused(2, "the key data is not a valid OpenSSH key blob") from None
    if inner != key_type:
        raise Refused(2, f"the key data says {inner[:40]!r} but the line says {key_type!r}")
    return key_type, blob


def identity(line: str) -> tuple | None:
    fields = line.split()
    return (fields[0], fields[1]) if len(fields) >= 2 and fields[0] in KEY_TYPES else None


def first_boot_key(path: str) -> str | None:
    """The key the first-boot user data installed (user data never changes on a running box)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("SSH_PUBLIC_KEY="):
                    words = shlex.split(line.split("=", 1)[1])
                    return " ".join(words) if words else None
    except (OSError, ValueError):
        return None
    return None


def open_dir(name: str, dir_fd: int | None = None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


def ssh_dir(home_fd: int, uid: int, gid: int) -> int:
    try:
        fd = open_dir(".ssh", home_fd)
    except FileNotFoundError:
        os.mkdir(".ssh", 0o700, dir_fd=home_fd)
        fd = open_dir(".ssh", home_fd)
        os.fchown(fd, uid, gid)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused(4, "~/.ssh is a symlink or not a directory; refusing to write through it") from None
        raise
    info = os.fstat(fd)
    if info.st_uid != uid:
        os.close(fd)
        raise Refused(4, f"~/.ssh belongs to uid {info.st_uid}, not the developer ({uid}); refusing")
    os.fchmod(fd, 0o700)
    return fd


def read_current(ssh_fd: int, uid: int) -> list:
    try:
        fd = os.open("authorized_keys", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=ssh_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        if exc.errno == errno.ELOOP:
            log("~/.ssh/authorized_keys was a symlink; it is replaced by a file, not followed")
            return []
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            log("~/.ssh/authorized_keys was not a regular file; it is replaced")
            return []
        if info.st_uid != uid or info.st_nlink != 1:
            # A hard link to a file that is not the developer's own: root must not
            # copy its content into a file the developer reads.
            log("~/.ssh/authorized_keys was not the developer's own single file; it is replaced, not read")
            return []
        return os.read(fd, MAX_READ).decode("utf-8", "replace").splitlines()
    finally:
        os.close(fd)


def merged(lines: list, key: str, retired: set) -> list:
    """The developer's own lines, without any devprod key old or new, then the managed block."""
    kept, inside = [], False
    for line in lines:
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside and identity(line) not in retired:
            kept.append(line)
    return kept + [BEGIN, key, END]


def write_atomically(ssh_fd: int, text: str, uid: int, gid: int) -> None:
    temporary = f".authorized_keys.devprod-{secrets.token_hex(8)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=ssh_fd)
    try:
        os.write(fd, text.encode())
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o600)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temporary, dir_fd=ssh_fd)
        raise
    os.close(fd)
    try:
        os.rename(temporary, "authorized_keys", src_dir_fd=ssh_fd, dst_dir_fd=ssh_fd)
    except OSError as exc:
        # e.g. the developer made authorized_keys a directory: refuse, leave nothing behind.
        os.unlink(temporary, dir_fd=ssh_fd)
        raise Refused(4, f"cannot replace ~/.ssh/authorized_keys ({exc.strerror}); refusing") from None


def state_path() -> str:
    directory = os.environ.get("DEVPROD_STATE_DIR", "/var/lib/devprod/keys")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    return os.path.join(directory, "managed-key")


def install(user: str, key: str) -> str:
    if not USER.match(user):
        raise Refused(2, f"user {user[:30]!r} is not a devprod developer name")
    new = validate_key(key)
    key = " ".join(key.split())
    try:
        entry = pwd.getpwnam(user)
        uid, gid, home = entry.pw_uid, entry.pw_gid, entry.pw_dir
    except KeyError:
        if "DEVPROD_HOME" not in os.environ:
            raise Refused(3, f"no user {user} yet (the first-boot script creates it); retried later") from None
        uid = gid = home = None
    uid = int(os.environ.get("DEVPROD_UID", uid))
    gid = int(os.environ.get("DEVPROD_GID", gid))
    home = os.environ.get("DEVPROD_HOME", home)
    try:
        home_fd = open_dir(home)
    except OSError as exc:
        raise Refused(3, f"home {home} is not there yet ({exc.strerror}); retried later") from None
    try:
        try:
            os.stat(HOME_READY, dir_fd=home_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise Refused(3, f"home volume not mounted on {home} yet; retried later") from None
        ssh_fd = ssh_dir(home_fd, uid, gid)
        try:
            saved = state_path()
            previous = []
            if os.path.exists(saved):
                with open(saved) as handle:
                    previous.append(handle.read().strip())
            previous.append(first_boot_key(os.environ.get("DEVPROD_USER_DATA", "/var/lib/cloud/instance/user-data.txt")))
            retired = {identity(k) for k in previous if k} | {new}
            lines = read_current(ssh_fd, uid)
            text = "\n".join(merged(lines, key, retired)) + "\n"
            changed = text != ("\n".join(lines) + "\n" if lines else "")
            if changed:
                write_atomically(ssh_fd, text, uid, gid)
            with open(os.open(saved + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                handle.write(key + "\n")
            os.replace(saved + ".tmp", saved)
            return f"{'installed' if changed else 'already current'}: {new[0]} key for {user}"
        finally:
            os.close(ssh_fd)
    finally:
        os.close(home_fd)


def main() -> int:
    try:
        log(install(os.environ.get("DEVPROD_USER", ""), os.environ.get("DEVPROD_PUBLIC_KEY", "")))
        return 0
    except Refused as exc:
        log(str(exc))
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
