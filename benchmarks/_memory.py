"""Peak memory of the current process, for benchmark runners (both environments import it)."""


def peak_rss_kb() -> int:
    """VmHWM: this process's own peak resident set (ru_maxrss would carry the parent's over exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
