"""Which raw-CSV worker process writes which sensor's files.

With ``DATA.WORKERS`` processes, each (machine, sensor) belongs to one of
them from its first rows on: the one that had the fewest sensors then.  A
file thus has one owner, which keeps its rows in order and its handle in one
place, while the processes format different sensors at the same time.
"""

import os

from tsrmon.rawlog.buffers import batch_samples
from tsrmon.rawlog.files import FILE_NAME


class SensorOwners:
    """``{(machine, sensor): worker index}`` for ``count`` workers (1: the thread or one process)."""

    def __init__(self, count):
        self.count = count
        self.owner = {}
        self.sensors_of = [0] * count  # sensors owned, per worker

    def split(self, batch):
        """``batch`` cut by worker: ``[(index, {key: FrameBuffer}, samples), ...]``."""
        owner = self.owner
        if self.count == 1:
            for key in batch:
                owner.setdefault(key, 0)
            return [(0, batch, batch_samples(batch))]
        parts = {}
        for key, buf in batch.items():
            index = owner.get(key)
            if index is None:
                counts = self.sensors_of
                index = owner[key] = counts.index(min(counts))
                counts[index] += 1
            part = parts.get(index)
            if part is None:
                part = parts[index] = [{}, 0]
            part[0][key] = buf
            part[1] += buf.samples
        return [(index, part, samples) for index, (part, samples) in sorted(parts.items())]

    def used(self):
        """The workers that ever had rows (worker 0 when none had)."""
        return sorted(set(self.owner.values())) or [0]

    def of_path(self, path):
        """The worker that may hold ``path`` open (0 when its sensor never wrote)."""
        m = FILE_NAME.match(os.path.basename(path))
        if m is None:
            return 0
        return self.owner.get((os.path.basename(os.path.dirname(path)), m.group(2)), 0)
