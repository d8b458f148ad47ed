"""Browse and resolve DNS-SD services with python-zeroconf.

Usage: zc_browse.py TYPE LABEL TIMEOUT_SECONDS
Prints one JSON object for the first resolved service whose instance name
starts with LABEL: {"name", "port", "addresses", "txt": [[key, value], ...]}
and exits 0; exits 1 if none resolved in time.
"""

import json
import queue
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf


def main() -> int:
    type_, label, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    deadline = time.monotonic() + timeout
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    names: "queue.Queue[str]" = queue.Queue()

    def on_change(zeroconf, service_type, name, state_change):
        # Handlers must not block: resolve on the main thread.
        if state_change is ServiceStateChange.Added and name.startswith(label):
            names.put(name)

    ServiceBrowser(zc, type_, handlers=[on_change])
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                name = names.get(timeout=left)
            except queue.Empty:
                break
            info = zc.get_service_info(type_, name, timeout=3000)
            if info is None:
                continue
            service = {
                "name": name,
                "port": info.port,
                "addresses": info.parsed_addresses(),
                "txt": [
                    [k.decode(), None if v is None else v.decode()]
                    for k, v in info.properties.items()
                ],
            }
            print(json.dumps(service), flush=True)
            return 0
        return 1
    finally:
        zc.close()


if __name__ == "__main__":
    sys.exit(main())
