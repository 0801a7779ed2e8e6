"""Background threads that exist once per worker process."""
from __future__ import annotations

import os
import threading
from typing import Callable


class PerProcessThread:
    """A daemon thread started on first need and again in every new process: gunicorn forks
    after the app is made, and a thread started before the fork does not survive it."""

    def __init__(self, name: str, target: Callable[[], None]):
        self.name, self.target = name, target
        self.thread: threading.Thread | None = None
        self.pid: int | None = None
        self.lock = threading.Lock()

    def ensure(self, before_start: Callable[[], None] | None = None) -> None:
        """Start the thread unless it runs in this process; cheap when it does."""
        if self._running():
            return
        with self.lock:
            if self._running():
                return
            if before_start is not None:
                before_start()
            self.pid = os.getpid()
            self.thread = threading.Thread(target=self.target, name=self.name, daemon=True)
            self.thread.start()

    def _running(self) -> bool:
        return self.thread is not None and self.pid == os.getpid() and self.thread.is_alive()
