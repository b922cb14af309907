"""Runs run_scheduler.py with every outgoing socket connection and name lookup recorded.

Usage: python tests/socket_audit.py LOG run_scheduler-arguments... (an audit hook appends one
JSON line per socket.connect / socket.getaddrinfo event to LOG). Drivers that open sockets in C
(libpq) bypass the hook, so the tests that use it run on MariaDB (PyMySQL is pure Python).
"""
import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    log = open(sys.argv[1], "a", encoding="utf-8")  # noqa: SIM115 - open for the life of the process

    def hook(event: str, args: tuple) -> None:
        if event == "socket.connect":
            address = args[1]
            log.write(json.dumps({"event": "connect", "address": address if isinstance(address, str) else list(address)[:2]}) + "\n")
            log.flush()
        elif event == "socket.getaddrinfo":
            log.write(json.dumps({"event": "getaddrinfo", "address": [str(args[0]), args[1]]}) + "\n")
            log.flush()

    sys.addaudithook(hook)
    sys.path.insert(0, str(ROOT))
    sys.argv = [str(ROOT / "run_scheduler.py"), *sys.argv[2:]]
    runpy.run_path(str(ROOT / "run_scheduler.py"), run_name="__main__")


if __name__ == "__main__":
    main()
