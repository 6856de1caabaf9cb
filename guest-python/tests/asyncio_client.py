# asyncio: a client of a native line echo server. Usage: asyncio_client.py HOST PORT
# The server echoes each line it receives; on b"BYE\n" it echoes it and closes the
# connection; on b"RESET\n" it resets the connection (SO_LINGER 0, no echo); b"SILENT\n" gets
# no answer at all.
import sys
import asyncio

HOST = sys.argv[1]
PORT = int(sys.argv[2])
BIG = 300000


async def session(k):
    reader, writer = await asyncio.open_connection(HOST, PORT)
    ok = 0
    for i in range(20):
        line = b"conn %d line %d\n" % (k, i)
        writer.write(line)
        await writer.drain()
        if await reader.readline() == line:
            ok += 1
    big = bytes(48 + (i * 7 + k) % 75 for i in range(BIG)) + b"\n"
    writer.write(big)  # more than the socket takes at once: drain sends the rest
    await writer.drain()
    same = await reader.readexactly(len(big)) == big
    writer.write(b"BYE\n")
    await writer.drain()
    tail = await reader.read()
    await writer.aclose()
    return "conn %d: %d/20 lines echoed, big line echoed %s, then %r" % (k, ok, same, tail)


async def main():
    for r in await asyncio.gather(*(session(k) for k in range(3))):
        print(r)

    reader, writer = await asyncio.open_connection(HOST, PORT)
    print("peername is the server's:", writer.get_extra_info("peername")[0] == HOST)
    writer.write(b"SILENT\n")
    await writer.drain()
    try:
        await asyncio.wait_for(reader.readline(), 0.2)
    except asyncio.TimeoutError:
        print("no answer: TimeoutError")
    writer.write(b"still there?\n")  # the stream is still usable after the timeout
    await writer.drain()
    print("after the timeout:", await reader.readline())
    writer.write(b"RESET\n")
    await writer.drain()
    try:
        print("read after reset returned", await reader.read())
    except OSError as e:
        print("read after reset: OSError", e.errno)
    print("then:", await reader.read())
    writer.close()
    await writer.wait_closed()


asyncio.run(main())
