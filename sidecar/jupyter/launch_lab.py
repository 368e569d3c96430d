# envjupyter-lab-launcher: launch the container's JupyterLab as its
# `jupyter-lab` would, without one cost. Importing jupyterlab.labapp asks for
# the app's version, which builds a set of app options whose npm registry is
# read by running `node yarn.js config --json`: about 0.6 s of CPU (0.8 s on
# its own) at every launch, a third of JupyterLab 4's boot, to fill in a
# registry that the version lookup never uses. Every later lookup of the
# registry (the extension manager's installs) runs the real one.
#
# This runs only when `jupyter-lab` on PATH is the standard script of this
# very interpreter (the script pip or Debian writes); anything else, a
# wrapper of the customer's own or another environment's JupyterLab, is
# exec'd as it is, so that the customer's launch keeps its meaning.
#
# The sidecar passes this program with `python3 -c`, after a line that sets
# _FILES (path -> base64 content): the sidecar's Jupyter config files, which
# this writes into the container itself, so that a launch needs no copy
# into the container through Docker (about 55 ms of every start).
import base64
import os
import shutil
import sys


def _write_files():
    """Write the sidecar's config files (_FILES), each whole or not at all."""
    for path, content in _FILES.items():  # noqa: F821 (set by the sidecar)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as f:
            f.write(base64.b64decode(content))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def _standard_script():
    """Return (path of jupyter-lab, whether it is this interpreter's standard script)."""
    path = shutil.which("jupyter-lab")
    if path is None:
        return None, False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return path, False
    first = head.split(b"\n", 1)[0]
    if not first.startswith(b"#!"):
        return path, False
    interpreter = first[2:].strip().decode("utf-8", "replace")
    if " " in interpreter or not os.path.isabs(interpreter):
        return path, False  # e.g. "/usr/bin/env python3": not provably this one
    same = os.path.realpath(interpreter) == os.path.realpath(sys.executable)
    return path, same and b"from jupyterlab.labapp import main" in head


def _main():
    try:
        _write_files()
    except OSError as e:  # a read-only /var/lib: Jupyter runs without them
        sys.stderr.write("envjupyter: could not write the sidecar's config files: %s\n" % e)
    path, standard = _standard_script()
    if path is None:
        sys.stderr.write("envjupyter: no jupyter-lab on PATH\n")
        return 127
    if not standard:
        os.execv(path, [path] + sys.argv[1:])
    import jupyterlab.commands as commands

    real = getattr(commands, "_yarn_config", None)
    if callable(real):
        commands._yarn_config = lambda logger: {"yarn config": {}, "npm config": {}}
    try:
        from jupyterlab.labapp import main
    finally:
        if callable(real):
            commands._yarn_config = real
    sys.argv[0] = path
    return main()


sys.exit(_main())
