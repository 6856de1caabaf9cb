#!/usr/bin/env python3
"""Build Python guest components for the usocket host.

    python3 guest-python/build.py runner -o python.wasm
    python3 guest-python/build.py app PROGRAM.py -o PROGRAM.wasm

`runner`: a generic Python: `usocket run --dir HOSTDIR::/app python.wasm /app/script.py ARGS`
runs the script given at run time with sys.argv == ["/app/script.py", ARGS...] (also
`python.wasm -c CODE ARGS` and `python.wasm - ARGS` for standard input).
`app`: a component whose `wasi:cli/run` runs PROGRAM.py as __main__ (sys.argv ==
["PROGRAM.py", ARGS...]); it needs no --dir.

Both have the usocket modules (usocket, uselect, uerrno, utime, tls) and MicroPython's names
(socket, select, errno, asyncio, ssl; time.ticks_ms and friends) in place; see README.md.

The build uses componentize-py 0.25.1 (pinned), installed on first use into a venv:
<repo>/target/usocket-python/venv, or $USOCKET_PYTHON_VENV. It assembles the WIT world from
guest-python/wit/world.wit, wit/usocket.wit and the WASI 0.2 WIT of the wasmtime-wasi crate
the host uses (found with `cargo metadata`; or $USOCKET_WASI_WIT, a directory of the WASI
packages' .wit files). An output newer than every input is left alone ("up to date"), so
tests may call this on every run; --force rebuilds. Concurrent builds of one output wait for
each other.

Options:
  -o, --output FILE     the component to write (required)
  --module NAME         also build in module NAME (importable at run time); repeatable
  --force               rebuild even if the output is up to date
  -q, --quiet           print nothing but errors
"""

import argparse
import ast
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

COMPONENTIZE_PY = "componentize-py"
COMPONENTIZE_PY_VERSION = "0.25.1"
WASMTIME_WASI = "wasmtime-wasi"
WORLD = "python-command"

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LIB = os.path.join(HERE, "lib")

# The stdlib modules the runner imports when it is built (only those exist when it runs):
# what a network script plausibly needs. Each one adds its code and objects to the
# interpreter snapshot (all of these together: about 2.5 MB on a component of about 19 MB).
RUNNER_MODULES = [
    "abc",
    "argparse",
    "array",
    "base64",
    "binascii",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "errno",
    "fnmatch",
    "fractions",
    "functools",
    "gc",
    "glob",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "math",
    "operator",
    "os",
    "os.path",
    "pathlib",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shlex",
    "statistics",
    "string",
    "struct",
    "sys",
    "textwrap",
    "time",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "urllib",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "zlib",
]


class BuildError(Exception):
    """A failure to report as `build.py: MESSAGE` (exit 1)."""


def log(args, message):
    if not args.quiet:
        print("build.py: " + message, flush=True)


# ---- the venv with componentize-py -----------------------------------------------------------


def venv_dir():
    return os.environ.get("USOCKET_PYTHON_VENV") or os.path.join(
        REPO, "target", "usocket-python", "venv"
    )


def venv_bin(venv, name):
    return os.path.join(venv, "bin", name)


def installed_version(venv):
    exe = venv_bin(venv, COMPONENTIZE_PY)
    if not os.path.exists(exe):
        return None
    try:
        out = subprocess.run(
            [exe, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split()
    return parts[-1] if parts else None


def ensure_componentize_py(args):
    """The path of the pinned componentize-py, installed into the venv if missing."""
    venv = venv_dir()
    exe = venv_bin(venv, COMPONENTIZE_PY)
    if installed_version(venv) == COMPONENTIZE_PY_VERSION:
        return exe
    lock = locked(os.path.abspath(venv) + ".lock")
    try:
        lock.__enter__()
    except OSError as e:
        raise BuildError(
            "cannot use %s for the venv (%s); set USOCKET_PYTHON_VENV to a writable path" % (venv, e)
        )
    with lock:
        if installed_version(venv) == COMPONENTIZE_PY_VERSION:
            return exe
        python = venv_bin(venv, "python")
        if not os.path.exists(python):
            log(args, "creating the venv %s" % venv)
            result = subprocess.run(
                [sys.executable, "-m", "venv", venv],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if result.returncode != 0 or not os.path.exists(python):
                raise BuildError(
                    "cannot create a venv at %s with %s -m venv:\n%s\n"
                    "Install Python's venv support (Debian/Ubuntu: apt-get install python3-venv), "
                    "or set USOCKET_PYTHON_VENV to a venv that has %s==%s."
                    % (
                        venv,
                        sys.executable,
                        result.stdout.decode("utf-8", "replace").strip(),
                        COMPONENTIZE_PY,
                        COMPONENTIZE_PY_VERSION,
                    )
                )
        log(args, "installing %s==%s into %s" % (COMPONENTIZE_PY, COMPONENTIZE_PY_VERSION, venv))
        result = subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "%s==%s" % (COMPONENTIZE_PY, COMPONENTIZE_PY_VERSION),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if result.returncode != 0:
            raise BuildError(
                "pip could not install %s==%s into %s:\n%s\n"
                "It needs the package index (or a wheel in a --find-links directory, "
                "PIP_FIND_LINKS). If the venv has no pip, delete it and run this again."
                % (
                    COMPONENTIZE_PY,
                    COMPONENTIZE_PY_VERSION,
                    venv,
                    tail(result.stdout.decode("utf-8", "replace")),
                )
            )
        version = installed_version(venv)
        if version != COMPONENTIZE_PY_VERSION:
            raise BuildError(
                "%s in %s reports version %r after installing %s"
                % (exe, venv, version, COMPONENTIZE_PY_VERSION)
            )
    return exe


def tail(text, lines=30):
    return "\n".join(text.strip().splitlines()[-lines:])


class locked:
    """An exclusive lock on a file (fcntl.flock), held for a `with` block."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        if getattr(self, "fd", None) is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


# ---- WIT -------------------------------------------------------------------------------------


def find_wasi_wit():
    """The directory of the WASI 0.2 .wit files (cli.wit, io.wit, ...)."""
    override = os.environ.get("USOCKET_WASI_WIT")
    if override:
        if not os.path.isdir(override):
            raise BuildError("USOCKET_WASI_WIT=%s is not a directory" % override)
        return os.path.abspath(override)
    try:
        result = subprocess.run(
            ["cargo", "metadata", "--format-version", "1"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as e:
        raise BuildError(
            "cannot run cargo (%s): it finds the WASI WIT files in the %s crate; install Rust, "
            "or set USOCKET_WASI_WIT to that crate's src/p2/wit/deps directory" % (e, WASMTIME_WASI)
        )
    if result.returncode != 0:
        raise BuildError(
            "cargo metadata failed in %s:\n%s\n(set USOCKET_WASI_WIT to the %s crate's "
            "src/p2/wit/deps directory to do without it)"
            % (REPO, tail(result.stderr.decode("utf-8", "replace")), WASMTIME_WASI)
        )
    metadata = json.loads(result.stdout)
    found = [p for p in metadata["packages"] if p["name"] == WASMTIME_WASI]
    if not found:
        raise BuildError("cargo metadata lists no %s package in %s" % (WASMTIME_WASI, REPO))
    found.sort(key=lambda p: [int(x) if x.isdigit() else 0 for x in p["version"].split(".")])
    crate = os.path.dirname(found[-1]["manifest_path"])
    deps = os.path.join(crate, "src", "p2", "wit", "deps")
    if not os.path.isdir(deps):
        raise BuildError(
            "%s %s has no WIT directory at %s" % (WASMTIME_WASI, found[-1]["version"], deps)
        )
    return deps


def wit_files(wasi):
    """[(source file, its path in the assembled WIT directory)]."""
    files = [
        (os.path.join(HERE, "wit", "world.wit"), "world.wit"),
        (os.path.realpath(os.path.join(REPO, "wit", "usocket.wit")), "deps/usocket/usocket.wit"),
    ]
    for root, _, names in sorted(os.walk(wasi)):
        for name in sorted(names):
            if name.endswith(".wit"):
                source = os.path.join(root, name)
                rel = os.path.relpath(source, wasi)
                if os.sep in rel:
                    # deps/<package>/<file>.wit layout
                    files.append((source, "deps/" + rel.replace(os.sep, "/")))
                else:
                    # one file per package: <package>.wit
                    files.append((source, "deps/%s/%s" % (name[: -len(".wit")], name)))
    return files


def assemble_wit(build, files):
    wit = os.path.join(build, "wit")
    if os.path.isdir(wit):
        shutil.rmtree(wit)
    for source, rel in files:
        target = os.path.join(wit, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
    return wit


# ---- the program's modules (app) -------------------------------------------------------------


def imports_of(path):
    """(module names to import at build time, names to try as submodules), or None if the
    host's Python cannot parse the file (componentize-py's Python then decides)."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (SyntaxError, ValueError):
        return None
    names, optional = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.append(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            for alias in node.names:
                if alias.name != "*":
                    optional.append(node.module + "." + alias.name)
    return names, optional


def local_module_files(directory, name):
    """The files of module `name` (its top level) if it lives in `directory`."""
    top = name.split(".")[0]
    single = os.path.join(directory, top + ".py")
    if os.path.isfile(single):
        return [single]
    package = os.path.join(directory, top)
    if os.path.isfile(os.path.join(package, "__init__.py")):
        found = []
        for root, _, files in os.walk(package):
            found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))
        return sorted(found)
    return []


def program_modules(program):
    """(modules the program and its local modules import, their local files)."""
    directory = os.path.dirname(program)
    names, optional, local = [], [], []
    todo, seen = [program], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path != program:
            local.append(path)
        found = imports_of(path)
        if found is None:
            if path == program:
                print(
                    "build.py: warning: this python3 cannot parse %s; modules it imports "
                    "are not built in unless given with --module" % path,
                    file=sys.stderr,
                )
            continue
        for name in found[0]:
            if name not in names:
                names.append(name)
            todo.extend(local_module_files(directory, name))
        for name in found[1]:
            if name not in optional:
                optional.append(name)
            todo.extend(local_module_files(directory, name))
    return names, optional, sorted(local)


# ---- building --------------------------------------------------------------------------------


# Names micropython_env replaces in sys.modules: a program that imports them means the alias.
ALIASED = {"socket", "select", "errno", "asyncio", "ssl"}


def split_program_modules(names, optional, local, program):
    """(early, late): the stdlib modules the program imports go before micropython_env (so
    that they bind CPython's own errno, socket, ...), everything else after it (the program's
    local modules, MicroPython's names and the aliases, which must resolve to the usocket
    modules). Optional names are marked "?" (see usocket_main._preload)."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    directory = os.path.dirname(program) if program else ""
    local_tops = {os.path.relpath(f, directory).split(os.sep)[0].rsplit(".py", 1)[0] for f in local}
    early, late = [], []
    for name, marked in [(n, n) for n in names] + [(n, "?" + n) for n in optional]:
        top = name.split(".")[0]
        if top in stdlib and top not in ALIASED and top not in local_tops:
            early.append(marked)
        else:
            late.append(marked)
    return early, late


def generated_modules(mode, base, late, program):
    config = (
        "# Generated by guest-python/build.py: what usocket_main imports at build time.\n"
        "MODE = %r\nBASE = %r\nPROGRAM = %r\n" % (mode, base, late)
    )
    modules = {"usocket_build_config.py": config}
    if program is not None:
        with open(program, "rb") as f:
            source = f.read()
        filename = os.path.basename(program)
        modules["usocket_program.py"] = (
            "# Generated by guest-python/build.py: the program, compiled when the component is\n"
            "# built and run by usocket_main when it runs.\n"
            "import linecache\n"
            "FILENAME = %r\n"
            "SOURCE = %r\n"
            "CODE = compile(SOURCE, FILENAME, 'exec')\n"
            "linecache.cache[FILENAME] = (len(SOURCE), None, SOURCE.decode('utf-8', 'replace')"
            ".splitlines(True), FILENAME)\n"
            "del linecache\n" % (filename, source)
        )
    return modules


def mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def up_to_date(output, manifest_path, key):
    out = mtime(output)
    if out is None:
        return False
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get("key") != key:
        return False
    for path in manifest.get("inputs", []):
        m = mtime(path)
        if m is None or m >= out:
            return False
    return True


def build(args):
    output = os.path.abspath(args.output)
    program = os.path.abspath(args.program) if args.mode == "app" else None
    if program is not None and not os.path.isfile(program):
        raise BuildError("no such program: %s" % args.program)
    if program is not None and not program.endswith(".py"):
        raise BuildError("the program must be a .py file: %s" % args.program)

    base = list(RUNNER_MODULES) if args.mode == "runner" else []
    base += [m for m in args.module if m not in base]
    if program is not None:
        names, optional, local = program_modules(program)
    else:
        names, optional, local = [], [], []

    build_dir = os.path.join(
        REPO,
        "target",
        "usocket-python",
        "build",
        hashlib.sha256(output.encode()).hexdigest()[:16],
    )
    lib_files = sorted(
        os.path.join(LIB, f) for f in os.listdir(LIB) if f.endswith(".py")
    )
    key = {
        "componentize-py": COMPONENTIZE_PY_VERSION,
        "mode": args.mode,
        "program": program,
        "modules": base,
        "program-modules": names,
        "program-optional": optional,
        "lib": lib_files,
        "local": local,
        "venv": os.path.abspath(venv_dir()),
        "wasi-override": os.environ.get("USOCKET_WASI_WIT"),
    }
    manifest_path = os.path.join(build_dir, "manifest.json")

    with locked(os.path.join(build_dir, "lock")):
        if not args.force and up_to_date(output, manifest_path, key):
            log(args, "%s is up to date" % args.output)
            return
        started = time.monotonic()
        exe = ensure_componentize_py(args)
        wasi = find_wasi_wit()
        files = wit_files(wasi)
        wit = assemble_wit(build_dir, files)

        gen = os.path.join(build_dir, "gen")
        if os.path.isdir(gen):
            shutil.rmtree(gen)
        os.makedirs(gen)
        early, late = split_program_modules(names, optional, local, program)
        modules = generated_modules(args.mode, base + [n for n in early if n not in base], late, program)
        for name, text in modules.items():
            with open(os.path.join(gen, name), "w") as f:
                f.write(text)

        # componentize-py writes __pycache__ next to the modules it imports: it gets copies,
        # so that nothing is written into the source tree.
        lib = os.path.join(build_dir, "lib")
        if os.path.isdir(lib):
            shutil.rmtree(lib)
        os.makedirs(lib)
        for source in lib_files:
            shutil.copy2(source, lib)
        if program is not None:
            directory = os.path.dirname(program)
            for source in local:
                target = os.path.join(gen, os.path.relpath(source, directory))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(source, target)

        # No --features: `wasi:cli/exit.exit-with-code` is `@since(version = 0.2.12)` (stable)
        # in the WASI WIT of wasmtime-wasi 48, and the run export uses it for exit codes.
        command = [exe, "-d", wit, "-w", WORLD, "componentize", "-p", gen, "-p", lib]
        partial = output + ".partial-%d" % os.getpid()
        command += ["usocket_main", "-o", partial]
        os.makedirs(os.path.dirname(output), exist_ok=True)
        log(args, "building %s (%s)" % (args.output, args.mode))
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=build_dir
        )
        text = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0 or not os.path.exists(partial):
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise BuildError(
                "componentize-py failed (exit %s):\n%s\ncommand: %s"
                % (result.returncode, tail(text, 60), " ".join(command))
            )
        warnings = [
            line for line in text.splitlines() if line.startswith("usocket build:")
        ]
        for line in warnings:
            print("build.py: warning: " + line[len("usocket build: ") :], file=sys.stderr)
        os.replace(partial, output)

        inputs = (
            [os.path.abspath(__file__), exe]
            + lib_files
            + [source for source, _ in files]
            + ([program] if program is not None else [])
            + local
        )
        with open(manifest_path, "w") as f:
            json.dump({"key": key, "inputs": inputs}, f, indent=1)
        log(
            args,
            "built %s: %.1f MB in %.0f s"
            % (
                args.output,
                os.path.getsize(output) / 1e6,
                time.monotonic() - started,
            ),
        )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="build.py",
        description="Build Python guest components for usocket (see guest-python/README.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python3 guest-python/build.py runner -o python.wasm\n"
        "  python3 guest-python/build.py app PROGRAM.py -o PROGRAM.wasm\n",
    )
    sub = parser.add_subparsers(dest="mode", metavar="{runner,app}")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", required=True, help="the component to write")
    common.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help="also build in module NAME (importable at run time); repeatable",
    )
    common.add_argument("--force", action="store_true", help="rebuild even if up to date")
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub.add_parser(
        "runner",
        parents=[common],
        help="a generic runner: python.wasm SCRIPT|-c CODE|- [ARGS...]",
    )
    app = sub.add_parser(
        "app", parents=[common], help="a component that runs PROGRAM.py as __main__"
    )
    app.add_argument("program", metavar="PROGRAM.py")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    try:
        build(args)
    except BuildError as e:
        print("build.py: error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("build.py: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
