"""The entry module of Python guest components (``guest-python/build.py``): its ``Run`` class
is the component's ``wasi:cli/run`` export.

componentize-py imports this module when it *builds* the component and snapshots the
interpreter; only modules imported then exist when the component runs. So this module
imports, at build time: the modules ``usocket_build_config.BASE`` names (for the runner, the
stdlib modules a network script plausibly needs; for an app, the stdlib modules its program
imports), the usocket modules and ``micropython_env`` (the ``socket``/``select``/``errno``/
``asyncio`` aliases), then the modules ``usocket_build_config.PROGRAM`` names (an app's own
modules and MicroPython names, which must see the aliases), and, for an app,
``usocket_program`` (the program, compiled).

At run time ``Run.run``:

- runner (``build.py runner``): ``python.wasm SCRIPT ARGS...`` runs the file SCRIPT as
  ``__main__`` with ``sys.argv == [SCRIPT, ARGS...]``; ``python.wasm -c CODE ARGS...`` runs
  CODE with ``sys.argv == ["-c", ARGS...]``; ``python.wasm - ARGS...`` runs standard input.
- app (``build.py app PROGRAM.py``): runs the built-in program as ``__main__`` with
  ``sys.argv == [PROGRAM.py, ARGS...]``.

Then: ``SystemExit(n)`` ends the component with exit code n (``sys.exit("text")`` prints the
text on stderr and exits 1); an uncaught exception prints its traceback on stderr and exits 1
(the instance never traps); ``atexit`` functions run and stdout/stderr are flushed first.
"""

import sys

import usocket_build_config as _config


def _preload(names):
    """Imports each module; a name "?pkg.sub" is tried only if pkg is a package, silently
    (``from pkg import sub`` may name a submodule or anything else)."""
    for name in names:
        if name.startswith("?"):
            parent, _, _ = name[1:].rpartition(".")
            if hasattr(sys.modules.get(parent), "__path__"):
                try:
                    __import__(name[1:])
                except Exception:
                    pass
            continue
        try:
            __import__(name)
        except Exception as e:
            print(
                "usocket build: module %r is not available at run time: %s: %s"
                % (name, type(e).__name__, e),
                file=sys.stderr,
            )


_preload(_config.BASE)

import atexit
import builtins
import linecache
import os
import traceback
import types

import uerrno
import uselect
import usocket
import utime
import micropython_env

_preload(_config.PROGRAM)

if _config.MODE == "app":
    import usocket_program as _program
else:
    _program = None

from componentize_py_types import Err as _Err
from wit_world import exports as _exports
from wit_world.imports import exit as _wasi_exit

_USAGE = """\
usage: python.wasm [-c CODE | - | SCRIPT] [ARGS...]
  SCRIPT    run the Python file SCRIPT (a path the host gave the guest, e.g. with --dir)
  -c CODE   run the Python source CODE
  -         run the Python source read from standard input
  -V        print the Python version
Built in: the usocket modules (usocket, uselect, uerrno, utime, tls; socket, select, errno,
asyncio and ssl are aliases) and the stdlib modules imported when the runner was built; no
others.
"""


class _Exit(Exception):
    """Ends the runner before any program ran (usage errors): the exit code."""

    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


def _source(argv):
    """(code object, __main__'s __file__ or None, sys.argv) for this run."""
    if _program is not None:
        return _program.CODE, _program.FILENAME, [_program.FILENAME] + argv[1:]
    args = argv[1:]
    if not args:
        sys.stderr.write(_USAGE)
        raise _Exit(2)
    first = args[0]
    if first == "-c":
        if len(args) < 2:
            sys.stderr.write("python.wasm: -c needs an argument\n" + _USAGE)
            raise _Exit(2)
        linecache.cache["<string>"] = (len(args[1]), None, args[1].splitlines(True), "<string>")
        return compile(args[1], "<string>", "exec"), None, ["-c"] + args[2:]
    if first in ("-h", "--help"):
        sys.stdout.write(_USAGE)
        raise _Exit(0)
    if first in ("-V", "--version"):
        sys.stdout.write("Python %s (usocket guest runner)\n" % sys.version.split()[0])
        raise _Exit(0)
    if first == "-":
        text = sys.stdin.read()
        linecache.cache["<stdin>"] = (len(text), None, text.splitlines(True), "<stdin>")
        return compile(text, "<stdin>", "exec"), None, args
    if first.startswith("-") and first != "-":
        if first == "--" and len(args) > 1:
            args = args[1:]
            first = args[0]
        else:
            sys.stderr.write("python.wasm: unknown option %s\n%s" % (first, _USAGE))
            raise _Exit(2)
    data = message = None
    try:
        with open(first, "rb") as f:
            data = f.read()
    except OSError as e:
        message = e.strerror or str(e)
    if data is None:
        sys.stderr.write("python.wasm: can't open file %r: %s\n" % (first, message))
        raise _Exit(2)
    directory = os.path.dirname(first) or "."
    sys.path.insert(0, directory)
    return compile(data, first, "exec"), first, args


def _exit_code(e):
    """The exit code of SystemExit `e`, as CPython computes it."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _print_exception(e):
    """The traceback of `e` on stderr, without this module's own frames."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    try:
        traceback.print_exception(type(e), e, tb)
    except BaseException:
        try:
            sys.stderr.write("%s: %s\n" % (type(e).__name__, e))
        except BaseException:
            pass


def _main():
    """Runs the program; its exit code."""
    try:
        code, filename, argv = _source(list(sys.argv))
    except _Exit as e:
        return e.code
    except SyntaxError as e:
        _print_exception(e)
        return 1
    main = types.ModuleType("__main__")
    if filename is not None:
        main.__file__ = filename
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = argv
    try:
        exec(code, main.__dict__)
    except SystemExit as e:
        return _exit_code(e)
    except BaseException as e:
        _print_exception(e)
        return 1
    return 0


def _finish(code):
    """atexit functions, then flushed output; then the exit code goes to the host."""
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    if code:
        if hasattr(_wasi_exit, "exit_with_code"):
            _wasi_exit.exit_with_code(code)
        _wasi_exit.exit(_Err(None))


class Run(_exports.Run):
    def run(self):
        try:
            code = _main()
        except BaseException as e:
            _print_exception(e)
            code = 1
        _finish(code)
