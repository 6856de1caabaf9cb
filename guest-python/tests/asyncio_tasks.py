# asyncio: tasks, sleeping, timeouts, cancellation, gather, Event, Lock, the loop's API.
# A read that never comes ends in TimeoutError through wait_for (a server on 127.0.0.1:9851
# in this same guest accepts and stays silent). Timings are only checked against wide bounds.
import asyncio
import utime

PORT = 9851


def elapsed_ms(t0):
    return utime.ticks_diff(utime.ticks_ms(), t0)


async def sleeper(name, ms, log):
    await asyncio.sleep_ms(ms)
    log.append(name)
    return name


async def fails(ms, exc):
    await asyncio.sleep_ms(ms)
    raise exc


async def test_sleep_order():
    log = []
    t0 = utime.ticks_ms()
    plan = (("c", 150), ("a", 50), ("b", 100))
    tasks = [asyncio.create_task(sleeper(n, ms, log)) for n, ms in plan]
    await asyncio.sleep(0.2)
    print("sleep order:", log, all(t.done() for t in tasks))
    e = elapsed_ms(t0)
    print("sleep 0.2 s took 150..2000 ms:", 150 <= e <= 2000)
    # sleep(0) lets the other ready tasks run, in turn.
    log = []

    async def spin(name):
        for i in range(3):
            log.append(name + str(i))
            await asyncio.sleep(0)

    await asyncio.gather(spin("x"), spin("y"))
    print("sleep(0) round robin:", " ".join(log))


async def test_await_task():
    t = asyncio.create_task(sleeper("r", 10, []))
    print("await task:", await t, "again:", await t, "done:", t.done())
    t = asyncio.create_task(fails(10, ValueError("boom")))
    for _ in range(2):
        try:
            await t
        except ValueError as e:
            print("await failed task: ValueError", e)
    print("current_task is a Task:", isinstance(asyncio.current_task(), asyncio.Task))


async def test_cancel():
    log = []

    async def victim():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("cancelled in sleep")
            await asyncio.sleep_ms(10)  # may still wait while cleaning up
            log.append("cleanup done")
            raise

    t0 = utime.ticks_ms()
    t = asyncio.create_task(victim())
    await asyncio.sleep_ms(20)
    print("cancel returns:", t.cancel(), "done right after:", t.done())
    try:
        await t
    except asyncio.CancelledError:
        print("await cancelled task: CancelledError")
    print("log:", log, "done:", t.done(), "cancel again:", t.cancel())
    print("cancel was prompt:", elapsed_ms(t0) < 2000)

    # A task cancelled before it ever ran never runs.
    ran = []

    async def never():
        ran.append(1)

    t = asyncio.create_task(never())
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        print("cancelled before start, ran:", ran)

    # A task may catch the cancellation and return normally.
    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "caught"

    t = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    t.cancel()
    print("stubborn task returns:", await t)

    # A task cancelling itself gets CancelledError at its next wait.
    async def self_cancel():
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep_ms(1)
        except asyncio.CancelledError:
            return "self-cancel seen"

    print(await asyncio.create_task(self_cancel()))


async def test_wait_for():
    print("wait_for in time:", await asyncio.wait_for(sleeper("w", 10, []), 1))
    print("wait_for_ms in time:", await asyncio.wait_for_ms(sleeper("w", 10, []), 1000))
    print("wait_for None:", await asyncio.wait_for(sleeper("n", 1, []), None))
    log = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("inner cancelled")
            raise

    t0 = utime.ticks_ms()
    try:
        await asyncio.wait_for(slow(), 0.05)
    except asyncio.TimeoutError:
        print("wait_for timed out; inner:", log)
    e = elapsed_ms(t0)
    print("timeout after 30..2000 ms:", 30 <= e <= 2000)
    try:
        await asyncio.wait_for_ms(slow(), 0)
    except TimeoutError:
        print("wait_for_ms 0: TimeoutError (the builtin)", asyncio.TimeoutError is TimeoutError)
    try:
        await asyncio.wait_for(fails(1, KeyError("k")), 1)
    except KeyError as e:
        print("wait_for passes the error on: KeyError", e)

    # Cancelling the task waiting in wait_for cancels the inner one too.
    log.clear()
    outer = asyncio.create_task(asyncio.wait_for(slow(), 10))
    await asyncio.sleep_ms(10)
    outer.cancel()
    try:
        await outer
    except asyncio.CancelledError:
        print("outer cancelled; inner:", log)


async def test_read_timeout():
    kept = []  # the server's side stays open, silent
    server = await asyncio.start_server(lambda r, w: kept.append(w), "127.0.0.1", PORT)
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    t0 = utime.ticks_ms()
    try:
        await asyncio.wait_for(reader.readline(), 0.1)
    except asyncio.TimeoutError:
        print("readline nothing comes: TimeoutError")
    print("after 70..2000 ms:", 70 <= elapsed_ms(t0) <= 2000)
    try:
        await asyncio.wait_for(reader.read(10), 0.05)
    except asyncio.TimeoutError:
        print("read nothing comes: TimeoutError")
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    for w in kept:
        w.close()
    print("server closed; connections it accepted:", len(kept))


async def test_gather():
    log = []
    r = await asyncio.gather(sleeper("g1", 30, log), sleeper("g2", 10, log), asyncio.sleep(0, "g3"))
    print("gather:", r)
    print("finish order:", log)
    print("gather empty:", await asyncio.gather())
    r = await asyncio.gather(sleeper("ok", 10, []), fails(5, ValueError("bad")),
                             return_exceptions=True)
    print("return_exceptions:", r[0], type(r[1]).__name__, r[1])
    other = asyncio.create_task(sleeper("other", 40, log))
    try:
        await asyncio.gather(fails(5, OSError(104, "reset")), other)
    except OSError as e:
        print("gather raises the first error:", e.errno, "other still running:", not other.done())
    print("other finishes anyway:", await other)

    # Cancelling gather cancels its tasks.
    log.clear()

    async def long(name):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append(name)
            raise

    g = asyncio.create_task(asyncio.gather(long("l1"), long("l2")))
    await asyncio.sleep_ms(10)
    g.cancel()
    try:
        await g
    except asyncio.CancelledError:
        await asyncio.sleep(0)
        print("gather cancelled; children cancelled:", sorted(log))


async def test_event_lock():
    ev = asyncio.Event()
    log = []

    async def waiter(n):
        await ev.wait()
        log.append(n)

    ts = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep_ms(10)
    print("event waiters before set:", log, ev.is_set())
    ev.set()
    await asyncio.gather(*ts)
    print("event waiters after set:", log)
    ev.clear()
    try:
        await asyncio.wait_for(ev.wait(), 0.02)
    except asyncio.TimeoutError:
        print("event wait timed out; waiting list empty:", ev.waiting == [])

    lock = asyncio.Lock()
    order = []

    async def worker(n):
        async with lock:
            order.append("in%d" % n)
            await asyncio.sleep_ms(5)
            order.append("out%d" % n)

    await asyncio.gather(*(worker(i) for i in range(3)))
    print("lock serialises:", " ".join(order), "locked after:", lock.locked())

    # A waiter cancelled while it waits for the lock does not take it.
    await lock.acquire()
    t = asyncio.create_task(lock.acquire())
    await asyncio.sleep(0)
    t.cancel()
    await asyncio.sleep(0)
    lock.release()
    print("after cancelled waiter, lock free:", not lock.locked())

    flag = asyncio.ThreadSafeFlag()

    async def flag_waiter():
        await flag.wait()
        return "flag"

    t = asyncio.create_task(flag_waiter())
    await asyncio.sleep_ms(5)
    flag.set()
    print("ThreadSafeFlag:", await t, "cleared:", not flag.state)


async def test_unretrieved():
    seen = []
    loop = asyncio.get_event_loop()
    loop.set_exception_handler(
        lambda loop, ctx: seen.append((ctx["message"], repr(ctx["exception"]))))
    asyncio.create_task(fails(1, ValueError("lost")))
    await asyncio.sleep_ms(20)
    loop.set_exception_handler(None)
    print("handler saw:", seen)


async def main():
    for test in (test_sleep_order, test_await_task, test_cancel, test_wait_for, test_read_timeout,
                 test_gather, test_event_lock, test_unretrieved):
        print("--", test.__name__)
        await test()
    return "main result"


print("run returns:", asyncio.run(main()))

# The loop's own API.
loop = asyncio.get_event_loop()
print("run_until_complete:", loop.run_until_complete(sleeper("ruc", 5, [])))
log = []


async def stopper():
    await asyncio.sleep_ms(10)
    log.append("stopping")
    loop.stop()


loop.create_task(stopper())
loop.run_forever()
print("run_forever returned after stop:", log)
ev = asyncio.Event()
try:
    loop.run_until_complete(ev.wait())
except RuntimeError as e:
    print("deadlock detected:", str(e).startswith("deadlock"))
loop = asyncio.new_event_loop()
print("new_event_loop is current:", asyncio.get_event_loop() is loop)


async def leftover():
    try:
        await asyncio.sleep(10)
    finally:
        print("leftover task cleaned up at the end of run")


async def short_main():
    asyncio.create_task(leftover())
    await asyncio.sleep_ms(5)
    return 42


print("run with a leftover task:", asyncio.run(short_main()))
