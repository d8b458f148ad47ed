"""Publish DNS-SD services with python-zeroconf, an independent mDNS stack.

Usage: zc_publish.py SPEC_JSON
SPEC_JSON: {"type": "_knotwork._udp.local.", "ip": "10.0.0.2",
            "ttl": null or seconds for every record,
            "services": [{"name": "...", "port": 4000,
                          "txt": [["key", "value" or null], ...]}]}
Prints "ready" once every service is registered, then waits. SIGTERM
unregisters (goodbye packets) and exits; SIGKILL leaves the records to expire.
"""

import json
import signal
import socket
import sys
import threading

from zeroconf import IPVersion, ServiceInfo, Zeroconf


def main() -> int:
    spec = json.loads(sys.argv[1])
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    ttl = spec.get("ttl")
    infos = []
    for svc in spec["services"]:
        # A list keeps the TXT order; None makes a key without "=".
        props = {
            k.encode(): (None if v is None else v.encode()) for k, v in svc["txt"]
        }
        kwargs = {}
        if ttl is not None:
            kwargs = {"host_ttl": ttl, "other_ttl": ttl}
        info = ServiceInfo(
            spec["type"],
            f"{svc['name']}.{spec['type']}",
            addresses=[socket.inet_aton(spec["ip"])],
            port=svc["port"],
            properties=props,
            server=f"{svc['name']}.local.",
            **kwargs,
        )
        zc.register_service(info)
        infos.append(info)
    print("ready", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    for info in infos:
        zc.unregister_service(info)
    zc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
