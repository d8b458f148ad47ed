"""A WebSocket client on PyPI's `websockets` (an independent RFC 6455
implementation), driven by tests/interop_ws.rs against our listener.

Usage: ws_client.py <url>. Prints one line per step:
  upgraded                 the opening handshake completed (our 101 checked)
  frame <type> <hex>       the first message our side sent, and its Python type
  pong                     our side answered a ping
  end <close code|none>    how the connection ended after a text message
"""

import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def main(url: str) -> None:
    with connect(url, max_size=2**20, open_timeout=10, close_timeout=10) as ws:
        print("upgraded", flush=True)
        ws.send(b"hello from python")
        msg = ws.recv(timeout=10)
        print("frame", type(msg).__name__, msg.hex() if isinstance(msg, bytes) else msg, flush=True)
        ws.ping(b"py").wait(timeout=10)
        print("pong", flush=True)
        ws.send("a text message")
        try:
            ws.recv(timeout=10)
            print("end none", flush=True)
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else "none"
            print("end", code, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
