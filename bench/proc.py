"""What the kernel says about the daemon: CPU seconds, RSS, its children."""

import os

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid, shared=True):
    """Resident set size of ``pid`` in MiB (0 if it is gone); without
    ``shared``, less its resident shared memory (RssShmem)."""
    rss = shmem = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("RssShmem:"):
                    shmem = int(line.split()[1])
    except OSError:
        pass
    return (rss if shared else rss - shmem) / 1024


def children(pid):
    """Direct children of ``pid`` (the raw-CSV writer process, for one)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def tree_rss_mb(pid):
    """RSS of ``pid`` plus its direct children, in MiB.  The memory the
    daemon shares with its raw-CSV workers (tsrmon.rawlog.arena) is resident
    in both: it is counted once, in the daemon."""
    return rss_mb(pid) + sum(rss_mb(c, shared=False) for c in children(pid))


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted sequence (None if empty)."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]
