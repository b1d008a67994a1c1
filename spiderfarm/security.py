"""The coordination channel's rules: addresses and authkeys (what a worker may send is
checked by ``protocol.check_exchange``).

The manager speaks pickle to whoever holds the authkey, and an authenticated peer can
run code on the server (CPython documents this), so the key is the whole defence:
loopback by default, a strong key required for anything else, key files private.
Unauthenticated bytes never reach pickle: the HMAC challenge comes first.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import secrets
import stat
import tempfile
from pathlib import Path

from .errors import SettingsError, SpiderfarmError

__all__ = [
    "AUTHKEY_ENV",
    "MIN_KEY_BYTES",
    "decode_key",
    "is_loopback",
    "load_authkey",
    "parse_address",
    "require_authkey",
    "require_strong_key",
    "write_new_authkey",
]

AUTHKEY_ENV = "SPIDERFARM_AUTHKEY"
MIN_KEY_BYTES = 32
_HOW = (
    "generate one with: python -c 'import secrets; print(secrets.token_hex(32))' > farm.key "
    "&& chmod 600 farm.key"
)
# Keys from tutorials and defaults that an attacker tries first.
_WELL_KNOWN = {
    b"", b"abc", b"abracadabra", b"secret", b"password", b"passw0rd", b"changeme", b"key",
    b"authkey", b"spiderfarm", b"test", b"admin", b"letmein", b"123456", b"12345678",
    b"qwerty", b"default",
}  # fmt: skip


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``) -> (host, port).

    Raises:
        SettingsError: no port, or a port that is not a number in 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        raise SettingsError(f"address {text!r} must be HOST:PORT, for example 127.0.0.1:5000")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise SettingsError(f"address {text!r} has no valid port (0..65535)")
    return host.strip("[]") or default_host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def decode_key(text: str) -> bytes:
    """Key text -> key bytes: hex (64+ digits) or base64 (of 32+ bytes) is decoded,
    anything else is used as it is."""
    text = text.strip()
    if len(text) >= 2 * MIN_KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if len(text) >= 43:  # 32 bytes in base64, padding optional
        try:
            decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) >= MIN_KEY_BYTES:
            return decoded
    return text.encode()


def load_authkey(path: str | None, env_value: str | None) -> bytes | None:
    """The authkey from a key file or ``SPIDERFARM_AUTHKEY``; None if neither is given.

    Raises:
        SettingsError: the file is unreadable, readable by other users, or empty.
    """
    if path:
        try:
            mode = os.stat(path).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SettingsError(
                    f"authkey file {path!r} is readable by other users (mode "
                    f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}"
                )
            text = Path(path).read_text()
        except OSError as exc:
            raise SettingsError(f"cannot read authkey file {path!r}: {exc.strerror}") from None
    elif env_value is not None:
        text = env_value
    else:
        return None
    key = decode_key(text)
    if not key:
        raise SettingsError(f"the authkey from {path or AUTHKEY_ENV} is empty; {_HOW}")
    return key


def require_authkey(path: str | None) -> bytes:
    """The key from ``path`` or ``SPIDERFARM_AUTHKEY``, for a command that must have one.

    Raises:
        SpiderfarmError: neither is given (SettingsError: as load_authkey).
    """
    key = load_authkey(path, os.environ.get(AUTHKEY_ENV))
    if key is None:
        raise SpiderfarmError(
            "no authkey: pass --authkey-file FILE (the file the server printed) "
            f"or set {AUTHKEY_ENV}"
        )
    return key


def require_strong_key(key: bytes, host: str) -> None:
    """Refuse a weak key for a non-loopback bind.

    Raises:
        SettingsError: saying why the key is weak and how to make a strong one.
    """
    if is_loopback(host):
        return
    if key.lower() in _WELL_KNOWN:
        problem = "a well-known key"
    elif len(key) < MIN_KEY_BYTES:
        problem = f"only {len(key)} bytes"
    elif len(set(key)) < 16:
        problem = "not random (too few distinct bytes)"
    else:
        return
    raise SettingsError(
        f"refusing to listen on {host}: the authkey is {problem}; a non-loopback bind needs "
        f"at least {MIN_KEY_BYTES} random bytes (hex or base64) from --authkey-file or "
        f"{AUTHKEY_ENV}; {_HOW}"
    )


def write_new_authkey(directory: str | None = None) -> tuple[bytes, Path]:
    """Generate a 32-byte key and write it as hex to a new mode-0600 file."""
    key = secrets.token_bytes(MIN_KEY_BYTES)
    fd, name = tempfile.mkstemp(prefix="spiderfarm-", suffix=".key", dir=directory)
    with open(fd, "w") as fh:  # mkstemp creates the file 0600
        fh.write(key.hex() + "\n")
    return key, Path(name)
