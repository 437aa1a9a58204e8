"""``python -m qlm.runtime.emulator``: the emulator without the full ``qlm`` CLI (used by the
emulated launcher's subprocess mode)."""

from __future__ import annotations

import argparse
import os
import threading
import time

from qlm.runtime.emulator.cli import emulate_command


def _exit_with_parent(pid: int) -> None:
    """End this process when ``pid`` (the launcher) is gone, so emulators never outlive it."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != pid:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m qlm.runtime.emulator")
    ap.add_argument("--model", required=True)
    ap.add_argument("--gpu", default="A100-80G")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--sleep-mode", action="store_true")
    ap.add_argument("--scheduling-policy", default="fcfs")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stream-interval", type=float, default=0.01,
                    help="wall seconds between a stream's chunks")
    ap.add_argument("--cold-start", action="store_true",
                    help="refuse connections for the model's cold-start time first")
    ap.add_argument("--disk-gbps", type=float, default=2.0, help="checkpoint read rate (cold start)")
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this process ends")
    a = ap.parse_args(argv)
    if a.parent_pid is not None:
        _exit_with_parent(a.parent_pid)
    emulate_command(a.model, a.gpu, a.tp, a.port, a.host, a.sleep_mode, a.scheduling_policy,
                    a.speed, a.profile, a.seed, stream_interval_s=a.stream_interval,
                    cold_start=a.cold_start, disk_gbps=a.disk_gbps)


if __name__ == "__main__":
    main()
