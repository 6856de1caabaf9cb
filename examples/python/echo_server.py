# echo_server.py: a line echo server for many clients at once, in one guest, with uselect.poll.
#
#   usocket run --allow bind,listen=127.0.0.1:7000 --allow accept=127.0.0.1:* \
#       --dir examples/python::/app --allow-precompiled python.cwasm /app/echo_server.py 7000
#
# Every socket is non-blocking. The listener's POLLIN means clients to accept; a client's
# POLLIN means lines to echo; end of stream, an error or a hang-up closes that client, and one
# bad client never stops the server. An echo that does not fit waits for POLLOUT, and that
# client is not read meanwhile (a client that sends without reading cannot make the server
# buffer without limit). At the socket quota (accept fails with ENOMEM) new clients wait in
# the kernel's backlog until one leaves. Stops after MAX clients have come and gone (default:
# never).
import sys
import usocket as socket
import uselect as select
import uerrno as errno


class Client:
    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.pending = b""


def serve(port, max_clients):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    listener.listen()
    listener.setblocking(False)
    print("echo_server: listening on 127.0.0.1:%d" % port)
    sys.stdout.flush()

    poller = select.poll()
    poller.register(listener, select.POLLIN)
    clients = {}
    served = 0
    deferred = False
    while max_clients is None or served < max_clients:
        # While deferred, look at the quota again every second.
        ready = poller.poll(1000 if deferred else -1)
        if deferred and not ready:
            poller.register(listener, select.POLLIN)
            deferred = False
        for sock, revents in ready:
            if sock is listener:
                if not accept(listener, poller, clients):
                    print("echo_server: socket quota full; new clients wait")
                    poller.unregister(listener)
                    deferred = True
                continue
            client = clients.get(id(sock))
            if client is None:
                continue
            try:
                done = service(client, poller, revents)
            except OSError as e:
                print("echo_server: client %s: errno %d" % (client.name, e.errno), file=sys.stderr)
                done = True
            if done:
                del clients[id(sock)]
                poller.unregister(sock)
                sock.close()
                print("echo_server: client %s gone" % client.name)
                served += 1
                if deferred:
                    poller.register(listener, select.POLLIN)
                    deferred = False
            sys.stdout.flush()
    listener.close()


def accept(listener, poller, clients):
    """Accepts every pending client; False when the socket quota is full."""
    while True:
        try:
            sock, (host, port) = listener.accept()
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ECONNABORTED):
                return True
            if e.errno == errno.ENOMEM:
                return False
            raise
        sock.setblocking(False)
        name = "%s:%d" % (host, port)
        clients[id(sock)] = Client(sock, name)
        poller.register(sock, select.POLLIN)
        print("echo_server: client %s" % name)


def service(client, poller, revents):
    """Handles one client's events; True when the client is finished."""
    if revents & select.POLLOUT:
        flush(client)
    if revents & select.POLLIN and not client.pending:
        # A non-blocking readline gives a line, the part of one received so far (echoed as it
        # is), b"" at end of stream, or None when nothing is queued.
        while not client.pending:
            line = client.sock.readline()
            if line is None:
                break
            if line == b"":
                return True
            client.pending = line
            flush(client)
    elif revents & (select.POLLERR | select.POLLHUP) and not revents & select.POLLIN:
        return True
    poller.modify(client.sock, select.POLLOUT if client.pending else select.POLLIN)
    return False


def flush(client):
    """Writes what fits of the client's pending echo (a non-blocking write may take part)."""
    if client.pending:
        n = client.sock.write(client.pending)
        if n:
            client.pending = client.pending[n:]


def main(argv):
    if len(argv) not in (2, 3) or not all(a.isdigit() for a in argv[1:]):
        print("usage: echo_server.py PORT [MAX]", file=sys.stderr)
        return 2
    try:
        serve(int(argv[1]), int(argv[2]) if len(argv) == 3 else None)
    except OSError as e:
        print("echo_server: errno %d" % e.errno, file=sys.stderr)
        return 1
    return 0


sys.exit(main(sys.argv))
