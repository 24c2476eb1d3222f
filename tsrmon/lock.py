"""Single-instance lock: one daemon per DATA.PATH and DATABASE.PATH.

An ``fcntl`` lock on ``<folder>/.tsrmon.lock`` held for the life of the
process: the kernel drops it when the process dies, so a crashed daemon
never leaves a stale lock behind (the deployed server's ``monitoring.lock``
did).  The file holds the owner's PID so the refusal can name it.
"""

import fcntl
import os


class LockError(Exception):
    """Another live process holds the lock; the text names its PID."""


LOCK_NAME = ".tsrmon.lock"


class InstanceLock:
    def __init__(self, folders):
        # One lock per distinct folder, in a stable order.
        self.folders = sorted({os.path.abspath(f) for f in folders})
        self._files = []

    def acquire(self):
        try:
            for folder in self.folders:
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, LOCK_NAME)
                f = open(path, "a+", encoding="ascii")
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.seek(0)
                    owner = f.read().strip() or "unknown"
                    f.close()
                    raise LockError(
                        f"{folder} is in use by another tsrmon (PID {owner}, lock {path}); "
                        f"stop it first or point DATA.PATH/DATABASE.PATH elsewhere"
                    ) from None
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
                self._files.append(f)
        except BaseException:
            self.release()
            raise
        return self

    def release(self):
        for f in self._files:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            finally:
                f.close()
        self._files = []

    @property
    def held(self):
        return bool(self._files)


def lock_owner(folder):
    """The PID written in ``folder``'s lock if a live process holds it, else None."""
    path = os.path.join(folder, LOCK_NAME)
    try:
        f = open(path, "r", encoding="ascii")
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "unknown"
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None
