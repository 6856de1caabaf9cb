# tls_asyncio: asyncio streams over TLS, both ends in this guest (cli/tests/python_tls.rs):
# start_server(ssl=) with the certificate from files, open_connection(ssl=) verified with the
# test CA as data, several clients at once, a server that writes first (a banner before the
# handshake is done), 256 KiB each way, and verification errors raised by open_connection.
#
# /pki holds ca.pem, server.pem and server.key (a certificate for localhost and 127.0.0.1);
# the host trusts only its system roots. Needs bind, listen, accept and connect on
# 127.0.0.1:*, resolve=*. Stdout must equal tls_asyncio.exp.
import asyncio
import hashlib

import uerrno as errno
import ssl
import tls

CA = open("/pki/ca.pem", "rb").read()
BULK = 256 * 1024
failed = []  # server-side errors (from clients that rejected the certificate)


async def handler(r, w):
    try:
        w.write(b"hello\n")  # before the handshake is done: sent by drain once it is
        await w.drain()
        while True:
            line = await r.readline()
            if not line:
                break
            if line == b"BULK\n":
                data = await r.readexactly(BULK)
                w.write(hashlib.sha256(data).hexdigest().encode() + b"\n")
                w.write(bytes(range(256)) * (BULK // 256))
            else:
                w.write(line.upper())
            await w.drain()
    except OSError as e:
        failed.append(errno.errorcode.get(e.errno, e.errno))
    finally:
        w.close()
        await w.wait_closed()


async def client(port, ctx, n):
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    banner = await r.readline()
    for i in range(3):
        w.write(b"client %d line %d\n" % (n, i))
        await w.drain()
        assert await r.readline() == b"CLIENT %d LINE %d\n" % (n, i)
    w.close()
    await w.wait_closed()
    return banner


async def bulk(port, ctx):
    r, w = await asyncio.open_connection("localhost", port, ssl=ctx)
    await r.readline()
    data = bytes(reversed(range(256))) * (BULK // 256)
    w.write(b"BULK\n")
    w.write(data)
    await w.drain()
    digest = (await r.readline()).strip().decode()
    back = await r.readexactly(BULK)
    w.close()
    await w.wait_closed()
    return digest == hashlib.sha256(data).hexdigest(), back == bytes(range(256)) * (BULK // 256)


async def refused(port, **kw):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port, **kw)
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)
    w.close()
    return "connected"


async def main():
    sctx = tls.SSLContext(tls.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain("/pki/server.pem", "/pki/server.key")
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=sctx)
    port = server.s.getsockname()[1]

    cctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(cadata=CA)
    banners = await asyncio.gather(*[client(port, cctx, n) for n in range(4)])
    print("clients", banners)
    print("bulk", await bulk(port, cctx))
    # ssl.SSLContext does not verify unless asked: it takes any certificate.
    print("ssl.SSLContext default", await client(port, ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), 9))

    # Verification errors come from open_connection itself.
    print("ssl=True", await refused(port, ssl=True, server_hostname="localhost"))
    print("name mismatch", await refused(port, ssl=cctx, server_hostname="wrong.test"))
    print("unknown CA", await refused(port, ssl=tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)))
    # The server side saw those clients give up during the handshake.
    for _ in range(50):
        if len(failed) >= 3:
            break
        await asyncio.sleep_ms(20)
    print("server-side failures", len(failed))

    server.close()
    await server.wait_closed()
    print("done")


asyncio.run(main())
