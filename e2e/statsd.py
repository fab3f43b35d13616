"""A StatsD listener on 127.0.0.1 for the e2e runs: Airflow sends its metrics there when statsd_on."""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from typing import Any


class StatsdListener:
    """A UDP socket on 127.0.0.1 that keeps every StatsD counter it receives, by name."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = int(self.socket.getsockname()[1])
        self.counters: dict[str, int] = defaultdict(int)
        self.kinds: dict[str, set[str]] = defaultdict(set)
        self.others: dict[str, int] = defaultdict(int)  # what else arrived (Airflow's own metrics)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="statsd", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self.socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in datagram.decode(errors="replace").splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                kind = kind.split("|")[0]
                if "autocalls." not in name:
                    with self._lock:
                        self.others[name.split(".")[1] if "." in name else name] += 1
                    continue
                name = name[name.index("autocalls.") :]
                with self._lock:
                    self.kinds[name].add(kind)
                    if kind == "c":
                        self.counters[name] += int(float(value))

    def count(self, name: str) -> int:
        with self._lock:
            return self.counters.get(name, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": dict(self.counters),
                "types": {k: sorted(v) for k, v in self.kinds.items()},
                "others": dict(sorted(self.others.items(), key=lambda item: -item[1])[:10]),
            }

    def reset(self) -> None:
        with self._lock:
            self.counters.clear()
            self.kinds.clear()
            self.others.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()
