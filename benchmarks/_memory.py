"""Peak memory of the current process, for benchmark runners (both environments import it)."""


def peak_rss_kb() -> int:
    """VmHWM: this process's own peak resident set (ru_maxrss would carry the parent's over exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class PeakAnonymous:
    """Peak of this process's anonymous (private) resident memory, sampled every ``interval`` seconds.

    VmHWM also counts file-backed pages, such as those of a memory-mapped Arrow dataset that a
    stage reads through once; the kernel drops those under pressure. Use as a context manager;
    ``kb`` holds the peak.
    """

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval, self.kb, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.kb = max(self.kb, self._read())

    def __enter__(self) -> "PeakAnonymous":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.kb = max(self.kb, self._read())
