#!/usr/bin/env python3
"""An independent knotwork Noise peer, for interop tests.

It speaks knotwork's handshake on top of a third-party Noise library
(`noiseprotocol` 0.3.1 or `dissononce` 0.34.3) and `cryptography`'s Ed25519:

- preamble: b"KNTW" | version 1 | pattern (1 XX, 2 IK) | suite (1 ChaChaPoly,
  2 AESGCM) | 0; the initiator's preamble is the Noise prologue; the responder
  replies with the same 8 bytes (status 0 in the last byte);
- framing: every Noise message is prefixed by its length, 2 bytes big-endian;
- identity payload in the messages that carry s: Ed25519 public key (32) |
  Noise static public key (32) | Ed25519 signature over
  b"knotwork-noise-static-key-v1" || Noise static public key (64); checked
  against the static key the Noise library authenticated;
- early data: each side appends EARLY to its identity payload (the
  responder in message 2, the XX initiator in message 3); the IK initiator
  sends it as the plaintext of its key confirmation, a transport message;
- transport: Noise transport messages, rekeyed (Noise REKEY) after every
  `--rekey` messages in each direction.

After the handshake it sends an empty frame, b"hello from python", 65519
bytes of i % 251, b"bye"; then reads 100000 bytes and echoes them back in
1000-byte frames. `--tamper` flips one ciphertext byte of its first non-empty
message and stops. Output lines on stdout: "static <hex>", "identity <hex>",
"listening <port>", "remote <hex>", "early <hex of the peer's early data>",
"ok".

`--vectors DIR` instead checks the spec's test vectors (docs/vectors, see
docs/protocol.md): it recomputes every handshake and transport message of
handshake.json with the library (with the vectors' fixed ephemeral keys)
and every frame of frames.json with its own encoder (FNV-1a, postcard, the
16-byte header), and fails on the first byte that differs. Output lines:
"vectors <handshake cases> <frames>", "ok".
"""

import argparse
import json
import os
import socket
import sys
import traceback
import warnings

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

MAGIC = b"KNTW"
VERSION = 1
DOMAIN = b"knotwork-noise-static-key-v1"
PATTERNS = {"XX": 1, "IK": 2}
SUITES = {"ChaChaPoly": 1, "AESGCM": 2}
ECHO_LEN = 100000


def raw(key):
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class NoiseProtocolLib:
    """Adapter over `noiseprotocol`; `e_priv` fixes the ephemeral key."""

    def __init__(self, pattern, suite, initiator, prologue, static_priv, rs, e_priv=None):
        from noise.connection import Keypair, NoiseConnection

        name = "Noise_%s_25519_%s_SHA256" % (pattern, suite)
        self.conn = NoiseConnection.from_name(name.encode())
        if initiator:
            self.conn.set_as_initiator()
        else:
            self.conn.set_as_responder()
        self.conn.set_keypair_from_private_bytes(Keypair.STATIC, static_priv)
        if rs is not None:
            self.conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, rs)
        if e_priv is not None:
            # The library uses a preset ephemeral key instead of a fresh one
            # (and warns that this is for tests only, which it is).
            warnings.filterwarnings("ignore", "One of ephemeral keypairs is already set")
            self.conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, e_priv)
        self.conn.set_prologue(prologue)
        self.conn.start_handshake()
        # The library drops the handshake state (and rs) when it finishes.
        self.rs = None
        proto = self.conn.noise_protocol
        done = proto.handshake_done

        def capture():
            rs_key = proto.handshake_state.rs
            self.rs = rs_key.public_bytes if rs_key is not None else None
            done()

        proto.handshake_done = capture

    def write(self, payload):
        return bytes(self.conn.write_message(payload))

    def read(self, msg):
        return bytes(self.conn.read_message(msg))

    def remote_static(self):
        if self.rs is not None:
            return self.rs
        return self.conn.noise_protocol.handshake_state.rs.public_bytes

    def encrypt(self, pt):
        return bytes(self.conn.encrypt(pt))

    def decrypt(self, ct):
        return bytes(self.conn.decrypt(ct))

    def rekey_out(self):
        self.conn.rekey_outbound_cipher()

    def rekey_in(self):
        self.conn.rekey_inbound_cipher()


class DissononceLib:
    """Adapter over `dissononce`; `e_priv` fixes the ephemeral key."""

    def __init__(self, pattern, suite, initiator, prologue, static_priv, rs, e_priv=None):
        from dissononce.cipher.aesgcm import AESGCMCipher
        from dissononce.cipher.chachapoly import ChaChaPolyCipher
        from dissononce.dh.x25519.private import PrivateKey
        from dissononce.dh.x25519.public import PublicKey
        from dissononce.dh.x25519.x25519 import X25519DH
        from dissononce.hash.sha256 import SHA256Hash
        from dissononce.processing.handshakepatterns.interactive.IK import IKHandshakePattern
        from dissononce.processing.handshakepatterns.interactive.XX import XXHandshakePattern
        from dissononce.processing.impl.cipherstate import CipherState
        from dissononce.processing.impl.handshakestate import HandshakeState
        from dissononce.processing.impl.symmetricstate import SymmetricState

        cipher = AESGCMCipher() if suite == "AESGCM" else ChaChaPolyCipher()
        dh = X25519DH()
        if e_priv is not None:
            # The library always draws its ephemeral key with
            # generate_keypair(): hand it the fixed one instead.
            fixed = dh.generate_keypair(PrivateKey(e_priv))
            draw = dh.generate_keypair
            dh.generate_keypair = lambda privatekey=None: fixed if privatekey is None else draw(privatekey)
        self.hs = HandshakeState(SymmetricState(CipherState(cipher), SHA256Hash()), dh)
        hp = IKHandshakePattern() if pattern == "IK" else XXHandshakePattern()
        s = dh.generate_keypair(PrivateKey(static_priv))
        self.hs.initialize(hp, initiator, prologue, s=s,
                           rs=PublicKey(rs) if rs is not None else None)
        self.initiator = initiator
        self.send = self.recv = None

    def _split(self, res):
        if res is not None:
            c1, c2 = res
            self.send, self.recv = (c1, c2) if self.initiator else (c2, c1)

    def write(self, payload):
        buf = bytearray()
        self._split(self.hs.write_message(payload, buf))
        return bytes(buf)

    def read(self, msg):
        buf = bytearray()
        self._split(self.hs.read_message(msg, buf))
        return bytes(buf)

    def remote_static(self):
        return self.hs.rs.data

    def encrypt(self, pt):
        return bytes(self.send.encrypt_with_ad(b"", pt))

    def decrypt(self, ct):
        return bytes(self.recv.decrypt_with_ad(b"", ct))

    @staticmethod
    def _rekey(cs):
        # dissononce 0.34.3's CipherState.rekey() departs from the Noise spec
        # (sections 4.2, 5.1) twice: it keeps all 48 bytes of ENCRYPT (the tag
        # too) as the new key, and it resets the nonce to 0. The spec: the
        # first 32 bytes, nonce unchanged. Same cipher, done per the spec.
        nonce = cs._nonce
        cs.initialize_key(cs.cipher.encrypt(cs._key, 2**64 - 1, b"", bytes(32))[:32])
        cs.set_nonce(nonce)

    def rekey_out(self):
        self._rekey(self.send)

    def rekey_in(self):
        self._rekey(self.recv)


LIBS = {"noiseprotocol": NoiseProtocolLib, "dissononce": DissononceLib}


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(out), n))
        out.extend(chunk)
    return bytes(out)


def send_frame(sock, msg):
    sock.sendall(len(msg).to_bytes(2, "big") + msg)


def recv_frame(sock):
    return recv_exact(sock, int.from_bytes(recv_exact(sock, 2), "big"))


class Identity:
    """An Ed25519 identity and an X25519 static key: random, or from the
    given seed and private key."""

    def __init__(self, seed=None, static_priv=None):
        if seed is None:
            self.key = ed25519.Ed25519PrivateKey.generate()
        else:
            self.key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        if static_priv is None:
            static = x25519.X25519PrivateKey.generate()
        else:
            static = x25519.X25519PrivateKey.from_private_bytes(static_priv)
        self.static_priv = static.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption())
        self.static_pub = raw(static.public_key())
        self.public = raw(self.key.public_key())

    def payload(self):
        return self.public + self.static_pub + self.key.sign(DOMAIN + self.static_pub)


EARLY = b"early data from python"


def verify_payload(payload, remote_static):
    """Checks the identity payload at the start of `payload` (what follows
    it is the sender's early data); returns the sender's Ed25519 key."""
    if len(payload) < 128:
        raise ValueError("identity payload of %d bytes" % len(payload))
    identity, signed_static, sig = payload[:32], payload[32:64], payload[64:128]
    ed25519.Ed25519PublicKey.from_public_bytes(identity).verify(sig, DOMAIN + signed_static)
    if signed_static != remote_static:
        raise ValueError("signed static key is not the handshake static key")
    return identity


class Transport:
    """Noise transport messages with knotwork's deterministic rekey."""

    def __init__(self, noise, sock, rekey):
        self.noise, self.sock, self.rekey = noise, sock, rekey
        self.sent = self.received = 0

    def seal(self, pt):
        ct = self.noise.encrypt(pt)
        self.sent += 1
        if self.rekey and self.sent % self.rekey == 0:
            self.noise.rekey_out()
        return ct

    def send(self, pt):
        send_frame(self.sock, self.seal(pt))

    def open(self, ct):
        pt = self.noise.decrypt(ct)
        self.received += 1
        if self.rekey and self.received % self.rekey == 0:
            self.noise.rekey_in()
        return pt

    def recv(self):
        return self.open(recv_frame(self.sock))


def handshake_initiator(sock, args, me):
    pattern, suite = args.pattern, args.suite
    preamble = MAGIC + bytes([VERSION, PATTERNS[pattern], SUITES[suite], 0])
    rs = bytes.fromhex(args.remote_static) if args.remote_static else None
    noise = LIBS[args.lib](pattern, suite, True, preamble, me.static_priv, rs)
    first = noise.write(me.payload() if pattern == "IK" else b"")
    sock.sendall(preamble)
    send_frame(sock, first)
    reply = recv_exact(sock, 8)
    if reply != preamble:
        raise ValueError("unexpected reply %r" % reply)
    payload = noise.read(recv_frame(sock))
    remote = verify_payload(payload, noise.remote_static())
    transport = Transport(noise, sock, args.rekey)
    if pattern == "XX":
        send_frame(sock, noise.write(me.payload() + EARLY))
    else:
        transport.send(EARLY)  # key confirmation, carrying the early data
    return remote, transport, payload[128:]


def handshake_responder(sock, args, me):
    preamble = recv_exact(sock, 8)
    if preamble[:4] != MAGIC or preamble[4] != VERSION or preamble[7] != 0:
        raise ValueError("bad preamble %r" % preamble)
    pattern = {v: k for k, v in PATTERNS.items()}[preamble[5]]
    suite = {v: k for k, v in SUITES.items()}[preamble[6]]
    if suite != args.suite or pattern != args.pattern:
        raise ValueError("peer chose %s %s" % (pattern, suite))
    noise = LIBS[args.lib](pattern, suite, False, preamble, me.static_priv, None)
    payload = noise.read(recv_frame(sock))
    transport = Transport(noise, sock, args.rekey)
    if pattern == "XX":
        if payload:
            raise ValueError("payload in XX message 1")
        sock.sendall(preamble)
        send_frame(sock, noise.write(me.payload() + EARLY))
        msg3 = noise.read(recv_frame(sock))
        remote = verify_payload(msg3, noise.remote_static())
        early = msg3[128:]
    else:
        if len(payload) != 128:
            raise ValueError("early data in IK message 1")
        remote = verify_payload(payload, noise.remote_static())
        sock.sendall(preamble)
        send_frame(sock, noise.write(me.payload() + EARLY))
        early = transport.recv()  # key confirmation, carrying the early data
    return remote, transport, early


def exchange(transport, tamper):
    messages = [b"", b"hello from python", bytes(i % 251 for i in range(65519)), b"bye"]
    for msg in messages:
        ct = transport.seal(msg)
        if tamper and msg:
            ct = bytearray(ct)
            ct[len(ct) // 2] ^= 0x01
            send_frame(transport.sock, bytes(ct))
            return
        send_frame(transport.sock, ct)
    got = bytearray()
    while len(got) < ECHO_LEN:
        got.extend(transport.recv())
    for i in range(0, len(got), 1000):
        transport.send(bytes(got[i:i + 1000]))


# --- The spec's test vectors (--vectors) ------------------------------------

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58(data):
    """Base58, Bitcoin alphabet: a PeerId's text form."""
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, digit = divmod(n, 58)
        out = BASE58[digit] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


def same(what, got, want):
    if got != want:
        raise ValueError("%s: computed %s, the vector says %s" % (what, got, want))


def frame(msg):
    return len(msg).to_bytes(2, "big") + msg


def check_handshake_case(lib, case, rekey):
    name, pattern, suite = case["name"], case["pattern"], case["suite"]
    ids = {}
    for role in ("initiator", "responder"):
        v = case[role]
        me = Identity(bytes.fromhex(v["ed25519_seed"]), bytes.fromhex(v["static_private"]))
        e_pub = raw(x25519.X25519PrivateKey.from_private_bytes(
            bytes.fromhex(v["ephemeral_private"])).public_key())
        same("%s %s ed25519 key" % (name, role), me.public.hex(), v["ed25519_public"])
        same("%s %s peer id" % (name, role), base58(me.public), v["peer_id"])
        same("%s %s static key" % (name, role), me.static_pub.hex(), v["static_public"])
        same("%s %s ephemeral key" % (name, role), e_pub.hex(), v["ephemeral_public"])
        ids[role] = me
    i, r = ids["initiator"], ids["responder"]
    preamble = MAGIC + bytes([VERSION, PATTERNS[pattern], SUITES[suite], 0])
    ini = LIBS[lib](pattern, suite, True, preamble, i.static_priv,
                    r.static_pub if pattern == "IK" else None,
                    bytes.fromhex(case["initiator"]["ephemeral_private"]))
    res = LIBS[lib](pattern, suite, False, preamble, r.static_priv, None,
                    bytes.fromhex(case["responder"]["ephemeral_private"]))
    ti, tr = Transport(ini, None, rekey), Transport(res, None, rekey)
    flights = []
    msg1 = ini.write(i.payload() if pattern == "IK" else b"")
    flights.append(("initiator", preamble + frame(msg1)))
    payload = res.read(msg1)
    if pattern == "IK":
        same(name + " identity in message 1", verify_payload(payload, res.remote_static()), i.public)
    else:
        same(name + " payload of message 1", payload, b"")
    msg2 = res.write(r.payload())
    flights.append(("responder", preamble + frame(msg2)))
    same(name + " identity in message 2", verify_payload(ini.read(msg2), ini.remote_static()), r.public)
    if pattern == "XX":
        msg3 = ini.write(i.payload())
        flights.append(("initiator", frame(msg3)))
        same(name + " identity in message 3", verify_payload(res.read(msg3), res.remote_static()), i.public)
    else:
        confirm = ti.seal(b"")
        flights.append(("initiator", frame(confirm)))
        same(name + " key confirmation", tr.open(confirm), b"")
    same(name + " handshake", [(who, data.hex()) for who, data in flights],
         [(f["from"], f["bytes"]) for f in case["handshake"]])
    for m in case["transport"]:
        send, recv = (ti, tr) if m["from"] == "initiator" else (tr, ti)
        while send.sent < m["nonce"]:
            same(name + " filling message", recv.open(send.seal(b"\0")), b"\0")
        plaintext = bytes.fromhex(m["plaintext"])
        ct = send.seal(plaintext)
        same("%s %s transport message %d" % (name, m["from"], m["nonce"]), frame(ct).hex(), m["frame"])
        same(name + " transport plaintext", recv.open(ct), plaintext)


def fnv1a(name):
    h = 0x811C9DC5
    for byte in name.encode():
        h = ((h ^ byte) * 0x01000193) % 2**32
    return h


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def text(s):
    return varint(len(s.encode())) + s.encode()


def texts(items):
    return varint(len(items)) + b"".join(text(s) for s in items)


DISCONNECT_REASONS = ["Shutdown", "Duplicate", "TooManyPeers", "TooManyFromIp", "Banned",
                      "Misbehaviour", "PingTimeout", "Probe", "Other"]


def encode_message(name, f):
    """Postcard, by hand, for the message types the vectors use."""
    if name == "knot/version/1":
        return (text(f["node_version"]) + texts(f["protocols"]) + texts(f["listen_addrs"])
                + text(f["observed_addr"]))
    if name in ("knot/ping/1", "knot/pong/1"):
        return varint(f["nonce"])
    if name == "knot/get-addrs/1":
        return varint(f["max"])
    if name == "knot/addrs/1":
        return texts(f["addrs"])
    if name == "knot/disconnect/1":
        reason = f["reason"]
        if isinstance(reason, dict):
            (variant, data), = reason.items()
            return varint(DISCONNECT_REASONS.index(variant)) + text(data)
        return varint(DISCONNECT_REASONS.index(reason))
    if name == "knot/refused":
        return b""
    raise ValueError("no encoder for " + name)


def check_frame(v):
    name = v["message"]
    msg_id = 0 if name == "knot/refused" else fnv1a(name)
    kind = {"message": 0, "request": 1, "response": 2}[v["kind"]]
    payload = encode_message(name, v["fields"])
    header = (b"kw" + bytes([1, kind]) + msg_id.to_bytes(4, "big")
              + v["request_id"].to_bytes(4, "big") + len(payload).to_bytes(4, "big"))
    same(v["name"] + " msg_id", "%#010x" % msg_id, v["msg_id"])
    same(v["name"] + " payload", payload.hex(), v["payload"])
    same(v["name"] + " frame", (header + payload).hex(), v["frame"])


def check_vectors(lib, directory):
    with open(os.path.join(directory, "handshake.json")) as f:
        handshakes = json.load(f)
    with open(os.path.join(directory, "frames.json")) as f:
        frames = json.load(f)
    for case in handshakes["cases"]:
        check_handshake_case(lib, case, handshakes["rekey_interval"])
    for v in frames["frames"]:
        check_frame(v)
    print("vectors", len(handshakes["cases"]), len(frames["frames"]), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", choices=sorted(LIBS), required=True)
    ap.add_argument("--vectors", metavar="DIR", help="check the test vectors in DIR and exit")
    ap.add_argument("--role", choices=["initiator", "responder"])
    ap.add_argument("--pattern", choices=sorted(PATTERNS), default="XX")
    ap.add_argument("--suite", choices=sorted(SUITES))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--remote-static", help="hex; the responder's static key for IK")
    ap.add_argument("--rekey", type=int, default=0)
    ap.add_argument("--tamper", action="store_true")
    args = ap.parse_args()
    if args.vectors:
        check_vectors(args.lib, args.vectors)
        print("ok", flush=True)
        return
    if args.role is None or args.suite is None:
        ap.error("--role and --suite are required unless --vectors is given")

    me = Identity()
    print("static", me.static_pub.hex())
    print("identity", me.public.hex(), flush=True)
    if args.role == "initiator":
        sock = socket.create_connection(("127.0.0.1", args.port))
        remote, transport, early = handshake_initiator(sock, args, me)
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        print("listening", listener.getsockname()[1], flush=True)
        sock, _ = listener.accept()
        remote, transport, early = handshake_responder(sock, args, me)
    print("remote", remote.hex(), flush=True)
    print("early", early.hex(), flush=True)
    exchange(transport, args.tamper)
    sock.close()
    print("ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # report on stderr, fail the process
        print("python peer failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
