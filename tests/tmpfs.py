"""A real small disk for tests: a tmpfs of a few KiB or MiB that fills up, with a filler
file to take room and give it back, and a remount to grow it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

__all__ = ["Tmpfs"]


class Tmpfs:
    """A tmpfs mounted at ``path`` (needs root); ``unmount`` at the end."""

    def __init__(self, path: Path, size_kib: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        if os.geteuid() != 0:
            pytest.skip("a full disk needs a tmpfs, and mounting one needs root")
        self._mount("-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path))
        self.filler = path / "filler"

    def _mount(self, *args: str) -> None:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            if not os.path.ismount(self.path):  # this machine cannot mount at all
                pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
            raise RuntimeError(f"mount {' '.join(args)} failed: {result.stderr.strip()}")

    def fill(self, kib: int) -> None:
        """Take ``kib`` KiB with a filler file (``free`` gives it back)."""
        self.filler.write_bytes(b"\0" * (kib * 1024))

    def free(self) -> None:
        self.filler.unlink()

    def grow(self, size_kib: int) -> None:
        """Make the tmpfs bigger, keeping what it holds."""
        self._mount("-o", f"remount,size={size_kib}k", str(self.path))

    def free_kib(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize // 1024

    def unmount(self) -> None:
        if os.path.ismount(self.path):
            subprocess.run(["umount", "-l", str(self.path)], check=True)
