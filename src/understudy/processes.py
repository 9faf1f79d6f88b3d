"""Which process is doing a piece of work (a training run, a staging directory), so that a worker
cleaning up after a dead predecessor leaves the work of a live command (``understudy train``)
alone."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessRef:
    """A process, by its pid and the host it runs on."""

    pid: int
    host: str

    @classmethod
    def current(cls) -> ProcessRef:
        """This process."""
        return cls(os.getpid(), socket.gethostname())

    @classmethod
    def from_json(cls, value: Any) -> ProcessRef | None:
        """The process a ``to_json`` value names; None for anything else."""
        if not isinstance(value, dict):
            return None
        pid, host = value.get("pid"), value.get("host")
        if not isinstance(pid, int) or not isinstance(host, str):
            return None
        return cls(pid, host)

    def to_json(self) -> dict[str, Any]:
        """``{"pid": ..., "host": ...}``, as kept in a run's metrics."""
        return {"pid": self.pid, "host": self.host}

    def may_be_alive(self) -> bool:
        """False only for a process of this host that has exited: a process on another host
        cannot be checked from here."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, under another user
            return True
        return True
