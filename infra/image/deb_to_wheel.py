"""Repacks Debian packages of Python distributions as wheels, so that pip can
install them from a local wheel directory the way it installs from a package
index (PyPI is out of reach here; the Debian registry is not).

The wheel holds the package's modules from /usr/lib/python3/dist-packages,
its metadata (dist-info as is, or egg-info converted), and what it installs
under /usr/share/jupyter and /etc/jupyter as wheel data, which pip puts under
its prefix (/usr/local), where Jupyter looks too.

Usage: python3 deb_to_wheel.py OUTDIR PACKAGE.deb...
"""
import base64
import email.parser
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

SITE = "usr/lib/python3/dist-packages"
DATA_ROOTS = ("usr/share/jupyter", "etc/jupyter")


def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def egg_metadata(egg: str) -> str:
    """METADATA from an egg-info: PKG-INFO plus the unconditional requirements."""
    with open(os.path.join(egg, "PKG-INFO"), encoding="utf-8") as f:
        msg = email.parser.Parser().parse(f)
    requires = os.path.join(egg, "requires.txt")
    if os.path.exists(requires) and "Requires-Dist" not in msg:
        with open(requires, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("["):
                    break  # extras and markers follow; a plain install needs none
                if line:
                    msg["Requires-Dist"] = line
    return msg.as_string()


def files_under(root: str, rel: str):
    top = os.path.join(root, rel)
    for dirpath, _, names in os.walk(top):
        for n in sorted(names):
            full = os.path.join(dirpath, n)
            yield full, os.path.relpath(full, top)


def repack(deb: str, outdir: str) -> str:
    with tempfile.TemporaryDirectory() as root:
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        site = os.path.join(root, SITE)
        infos = [n for n in os.listdir(site) if n.endswith((".dist-info", ".egg-info"))]
        if len(infos) != 1:
            raise SystemExit(f"{deb}: want one distribution in {SITE}, found {infos}")
        info = infos[0]
        name, version = info.rsplit(".", 1)[0].split("-", 1)
        name = name.replace("-", "_")
        dist = f"{name}-{version}.dist-info"
        if info.endswith(".dist-info"):
            with open(os.path.join(site, info, "METADATA"), encoding="utf-8") as f:
                metadata = f.read()
        else:
            metadata = egg_metadata(os.path.join(site, info))
        entries = {}
        for entry in sorted(os.listdir(site)):
            if entry == info:
                continue
            path = os.path.join(site, entry)
            if os.path.isdir(path):
                for full, rel in files_under(site, entry):
                    if "__pycache__" not in rel:
                        entries[f"{entry}/{rel}"] = full
            else:
                entries[entry] = path
        for data_root in DATA_ROOTS:
            if os.path.isdir(os.path.join(root, data_root)):
                target = data_root.removeprefix("usr/")
                for full, rel in files_under(root, data_root):
                    entries[f"{name}-{version}.data/data/{target}/{rel}"] = full
        ep = os.path.join(site, info, "entry_points.txt")
        meta = {
            f"{dist}/METADATA": metadata.encode(),
            f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: envjupyter deb_to_wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        }
        if os.path.exists(ep):
            with open(ep, "rb") as f:
                meta[f"{dist}/entry_points.txt"] = f.read()
        os.makedirs(outdir, exist_ok=True)
        path = os.path.join(outdir, f"{name}-{version}-py3-none-any.whl")
        record = []
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
            for arc, full in entries.items():
                with open(full, "rb") as f:
                    data = f.read()
                whl.writestr(arc, data)
                record.append(f"{arc},{digest(data)},{len(data)}")
            for arc, data in meta.items():
                whl.writestr(arc, data)
                record.append(f"{arc},{digest(data)},{len(data)}")
            record.append(f"{dist}/RECORD,,")
            whl.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
        return path


def main(outdir: str, debs: list[str]) -> None:
    for deb in debs:
        print(repack(deb, outdir))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
