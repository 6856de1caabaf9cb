# asyncio: a line echo server for a native peer. Usage: asyncio_echo_server.py PORT
# Listens on 127.0.0.1:PORT, prints READY, echoes every line on every connection, serving
# any number of connections at once; a client that resets or leaves mid-line affects no other.
# A line b"STOP\n" is answered with b"BYE\n", that connection is closed and so is the server;
# the script then prints "stopped" and ends. Without a STOP it gives up after 120 s (TIMEOUT).
import sys
import asyncio

PORT = int(sys.argv[1])
stop = asyncio.Event()


async def echo(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):  # the end of the stream, perhaps after half a line
                break
            if line == b"STOP\n":
                writer.write(b"BYE\n")
                await writer.drain()
                stop.set()
                break
            writer.write(line)
            await writer.drain()
    except OSError:
        pass  # e.g. ECONNRESET: this connection only
    writer.close()
    await writer.wait_closed()


async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", PORT, backlog=16)
    print("READY")
    sys.stdout.flush()  # the peer waits for this line
    try:
        await asyncio.wait_for(stop.wait(), 120)
        print("STOP received")
    except asyncio.TimeoutError:
        print("TIMEOUT")
    server.close()
    await server.wait_closed()
    print("stopped")


asyncio.run(main())
