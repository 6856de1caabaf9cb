# asyncio streams: a server on 127.0.0.1:9850 and its clients, all in this guest.
# Ten clients run the whole protocol at once (readline, readexactly, readinto, read to EOF,
# write + drain, a close with unsent output); others stop early (EOF, half a line, a reset, a
# handler that fails). The server serves them all and still serves the client after them.
import asyncio
import usocket

PORT = 9850
CLIENTS = 10
BULK = 200000
TAIL = 100000
LINGER_0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {on 1, 0 seconds}: close resets

outcomes = {}  # client name -> how its connection ended, seen by the server
handler_errors = []
active = [0, 0]  # handlers running now, most at once


def pattern(n):
    return bytes(i % 251 for i in range(n))


async def handle(reader, writer):
    active[0] += 1
    active[1] = max(active[1], active[0])
    name = "?"
    try:
        hello = await reader.readline()
        name = hello.split()[1].decode()
        peer = writer.get_extra_info("peername")
        writer.write(b"HI %s %s\n" % (name.encode(), peer[0].encode()))
        await writer.drain()
        if name == "crash":
            raise ValueError("crash asked for")
        while True:
            line = await reader.readline()
            if not line:
                outcomes[name] = "eof"
                break
            if not line.endswith(b"\n"):
                outcomes[name] = "eof after a partial line %r" % line
                break
            cmd, _, arg = line.rstrip(b"\n").partition(b" ")
            if cmd == b"ECHO":
                writer.write(arg + b"\n")
            elif cmd == b"LEN":
                data = await reader.readexactly(int(arg))
                writer.write(b"GOT %d %d\n" % (len(data), sum(data) % 65536))
            elif cmd == b"BULK":
                writer.write(pattern(int(arg)))
            elif cmd == b"QUIT":
                writer.write(b"BYE\n" + pattern(TAIL))
                writer.close()  # the tail is sent before the socket closes
                await writer.wait_closed()
                outcomes[name] = "quit"
                return
            await writer.drain()
    except OSError as e:
        outcomes[name] = "OSError %d" % e.errno
    finally:
        active[0] -= 1
    writer.close()


async def full_client(i):
    name = "c%d" % i
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    got = []
    writer.write(b"HELLO %s\n" % name.encode())
    await writer.drain()
    got.append(await reader.readline())
    # Two requests in one write; replies come back in order.
    writer.write(b"ECHO a-%d\nECHO b-%d\n" % (i, i))
    await writer.drain()
    got.append(await reader.readline())
    got.append(await reader.readline())
    # A body sent in pieces, with other tasks running in between.
    body = pattern(5000 + i)
    writer.write(b"LEN %d\n" % len(body))
    for k in range(0, len(body), 1000):
        writer.write(body[k:k + 1000])
        await writer.drain()
    got.append(await reader.readline())
    # A bulk reply, bigger than the socket buffers.
    writer.write(b"BULK %d\n" % BULK)
    await writer.drain()
    bulk = await reader.readexactly(BULK)
    got.append(b"bulk ok" if bulk == pattern(BULK) else b"bulk WRONG")
    # readinto, then read(n) for the rest of the line.
    writer.write(b"ECHO 0123456789\n")
    await writer.drain()
    buf = bytearray(4)
    n = 0
    while n < 4:
        mv = memoryview(buf)[n:]
        k = await reader.readinto(mv)
        if not k:
            break
        n += k
    rest = b""
    while not rest.endswith(b"\n"):
        part = await reader.read(100)
        if not part:
            break
        rest += part
    got.append(bytes(buf) + b"|" + rest)
    # QUIT: the server answers, sends a tail and closes; read() reads to the end.
    await writer.awrite(b"QUIT\n")
    tail = await reader.read()
    got.append(b"read to EOF: %d bytes, BYE first %d, tail ok %d" % (
        len(tail), tail.startswith(b"BYE\n"), tail[4:] == pattern(TAIL)))
    got.append(b"then %r" % await reader.read())
    await writer.aclose()
    return name, [g.decode().rstrip("\n") for g in got]


async def hello(name):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(b"HELLO %s\n" % name.encode())
    await writer.drain()
    hi = await reader.readline()
    return reader, writer, hi


async def early_clients():
    # Closes right after HELLO: the server sees the end of the stream.
    r, w, hi = await hello("eof")
    w.close()
    await w.wait_closed()
    # Half a line, then close.
    r, w, hi = await hello("half")
    w.write(b"ECHO no newline")
    await w.drain()
    w.close()
    await w.wait_closed()
    # Half a line, then a reset.
    r, w, hi = await hello("reset")
    w.write(b"ECHO cut")
    await w.drain()
    await asyncio.sleep_ms(20)
    w.get_extra_info("socket").setsockopt(usocket.SOL_SOCKET, usocket.SO_LINGER, LINGER_0)
    w.close()
    # The handler fails after its greeting: the connection is closed, the server goes on.
    r, w, hi = await hello("crash")
    print("crash client got", hi.split()[0], "then", await r.read())
    w.close()


async def main():
    loop = asyncio.get_event_loop()
    loop.set_exception_handler(lambda loop, ctx: handler_errors.append(repr(ctx["exception"])))
    server = await asyncio.start_server(handle, "127.0.0.1", PORT, backlog=16)
    async with server:
        await early_clients()
        results = await asyncio.gather(*(full_client(i) for i in range(CLIENTS)))
        for name, got in sorted(results, key=lambda r: int(r[0][1:])):
            print(name, "|", " | ".join(got))
        # The server still serves after everything above.
        r, w, hi = await hello("last")
        await w.awrite(b"ECHO still serving\nQUIT\n")
        first = await r.readline()
        second = await r.readline()
        print("last:", first.decode().strip(), "/", second.decode().strip())
        w.close()
        await w.wait_closed()
        for _ in range(500):  # lets the handlers record their ends (at most 5 s)
            if len(outcomes) == CLIENTS + 4:
                break
            await asyncio.sleep_ms(10)
    print("server closed; a connect now fails with errno", end=" ")
    try:
        await asyncio.open_connection("127.0.0.1", PORT)
    except OSError as e:
        print(e.errno)
    for name in sorted(outcomes):
        print("server saw", name, ":", outcomes[name])
    print("handler errors reported:", handler_errors)
    print("handlers ran concurrently:", active[1] > 1, "; running now:", active[0])


asyncio.run(main())
