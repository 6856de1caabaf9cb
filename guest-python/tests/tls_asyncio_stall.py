# tls_asyncio_stall: asyncio over TLS handshakes that stall (cli/tests/python_tls.rs). A
# non-blocking TLS socket in a handshake that waits for the peer is writable yet takes no
# data; the streams must then wait for the peer's data (POLLIN), not spin on POLLOUT.
#
#   tls_asyncio_stall.py PORT SILENT
#
# Listens on 127.0.0.1:PORT with TLS (/pki/server.pem, /pki/server.key) and prints READY; the
# native client sends its ClientHello and nothing more. The handler writes a banner and
# drains it for 300 ms: it must have tried to send only a few times. SILENT: a TCP server
# that never answers; open_connection to it must wait (no result within 300 ms). Needs bind,
# listen, accept and connect on 127.0.0.1:*. Stdout must equal tls_asyncio_stall.exp.
import sys

import asyncio
import tls

PORT, SILENT = int(sys.argv[1]), int(sys.argv[2])
tries = []  # one entry per send tried on the server's connection
done = asyncio.Event()


class CountingSocket(tls.SSLSocket):
    __slots__ = ()

    def send(self, data):
        tries.append(len(data))
        return tls.SSLSocket.send(self, data)


async def handler(r, w):
    w.s = CountingSocket._wrap(w.s.socket)
    w.write(b"banner\n")  # the handshake waits for the client's next flight: nothing goes
    try:
        await asyncio.wait_for_ms(w.drain(), 300)
        print("drained?")
    except asyncio.TimeoutError:
        print("drain waits; sends tried:", 0 < len(tries) < 10)
    w._out = bytearray()
    w.close()
    done.set()


async def main():
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain("/pki/server.pem", "/pki/server.key")
    server = await asyncio.start_server(handler, "127.0.0.1", PORT, ssl=ctx)
    print("READY")
    sys.stdout.flush()
    await asyncio.wait_for_ms(done.wait(), 10000)

    client = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations("/pki/ca.pem")
    try:
        await asyncio.wait_for_ms(asyncio.open_connection("127.0.0.1", SILENT, ssl=client), 300)
        print("connected?")
    except asyncio.TimeoutError:
        print("open_connection waits for the handshake")
    server.close()
    await server.wait_closed()
    print("done")


asyncio.run(main())
