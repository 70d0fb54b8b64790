"""The threaded client's own cost per command, apart from any cluster: `python -m
smr.bench.client_ir client --commands N --submit one|many` drives `smr.client.Client` through N
BlobLog appends of 100 bytes with the bench's window against a stand-in member (`serve`, started
as a subprocess), which answers every command at once with one replica's result. Run under
`valgrind --tool=callgrind`, the client process's instructions, less those of a run of fewer
commands, are the client library's per command (`sh native/callgrind_client.sh`): a count that
the machine's load does not move, to compare two versions of the client or its two ways of
submitting.

The stand-in member speaks the client port's protocol (the handshake, request and response
frames) and nothing else: it applies nothing and keeps nothing.
"""

from __future__ import annotations

import argparse
import queue
import socket
import subprocess
import sys
import threading

from smr.runtime import protocol
from smr.runtime.config import parse
from smr.runtime.hosted import RESULT_OK
from smr.transport.wire import FrameDecoder, Handshake, encode_frame

SECRET_HEX = "ab" * 16
WINDOW = 4096
PAYLOAD = b"\x5a" * 100


def serve() -> None:
    """Accept clients on an ephemeral port (printed on stdout), answer each command ok."""
    from smr.statemachines import BlobLog

    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    result = RESULT_OK + BlobLog.encode_result(1)

    def conn(sock: socket.socket) -> None:
        hs = Handshake(bytes.fromhex(SECRET_HEX), server=True, my_id=1, role="member")
        sock.sendall(hs.initial())
        while not hs.done:
            reply = hs.feed(sock.recv(4096))
            if reply:
                sock.sendall(reply)
        decoder, data = FrameDecoder(1 << 24), hs.leftover
        while True:
            out = []
            for _, body in decoder.feed(data):
                request = protocol.decode_request(body)
                response = protocol.Response(request.id, True, version=1, results={1: result})
                out.append(encode_frame(protocol.FRAME_RESPONSE, protocol.encode(response)))
            if out:
                sock.sendall(b"".join(out))
            data = sock.recv(1 << 20)
            if not data:
                return

    while True:
        sock, _ = listener.accept()
        threading.Thread(target=conn, args=(sock,), daemon=True).start()


def client(port: int, commands: int, submit: str) -> None:
    """`commands` appends with at most WINDOW outstanding, refilled as answers come."""
    from smr.client import Client
    from smr.statemachines import BlobLog

    config = parse(
        {
            "cluster": {"name": "client-ir", "secret_hex": SECRET_HEX},
            "members": [{"id": 1, "port": 1 + port % 60000, "client_port": port}],
            "subgroups": [{"type": "smr.statemachines:BlobLog", "mode": "ordered"}],
        }
    )
    c = Client(config, timeout_s=60, window_max=WINDOW)
    log = c.subgroup(BlobLog, replies="one")
    # one token per window slot in a C queue, as the bench harness keeps them (a Semaphore is
    # pure Python and would count as much as a part of the client)
    tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(WINDOW):
        tokens.put(None)
    done = threading.Event()
    left = [commands]

    def answered(future: object) -> None:
        tokens.put(None)
        left[0] -= 1  # answers complete on the client's one reader thread
        if left[0] == 0:
            done.set()

    sent = 0
    while sent < commands:
        tokens.get()
        free = 1
        if submit == "many":
            while free < min(1024, commands - sent):
                try:
                    tokens.get_nowait()
                except queue.Empty:
                    break
                free += 1
            futures = log.submit_many("append", [(PAYLOAD,)] * free)
        else:
            futures = [log.submit("append", PAYLOAD)]
        for f in futures:
            f.add_done_callback(answered)
        sent += free
    if commands:
        done.wait(120)
    c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("role", choices=["serve", "client"])
    ap.add_argument("--commands", type=int, default=20000)
    ap.add_argument("--submit", choices=["one", "many"], default="many")
    ap.add_argument("--port", type=int, help="the stand-in member's (default: start one)")
    args = ap.parse_args()
    if args.role == "serve":
        serve()
        return
    server = None
    port = args.port
    if port is None:
        server = subprocess.Popen(
            [sys.executable, "-m", "smr.bench.client_ir", "serve"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
    try:
        client(port, args.commands, args.submit)
    finally:
        if server is not None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
