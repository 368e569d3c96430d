"""Writes a tiny pure-Python wheel for the plugin tests (PyPI is out of
reach here): envjupyter_hello, whose module holds GREETING.

Usage: python3 make_test_wheel.py OUTDIR
"""
import base64
import hashlib
import os
import sys
import zipfile

NAME, VERSION = "envjupyter_hello", "0.1.0"
DIST = f"{NAME}-{VERSION}.dist-info"
FILES = {
    f"{NAME}/__init__.py": 'GREETING = "hello from an envjupyter plugin"\n',
    f"{DIST}/METADATA": f"Metadata-Version: 2.1\nName: envjupyter-hello\nVersion: {VERSION}\nSummary: test plugin\n",
    f"{DIST}/WHEEL": "Wheel-Version: 1.0\nGenerator: envjupyter\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}


def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, f"{NAME}-{VERSION}-py3-none-any.whl")
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for name, text in FILES.items():
            data = text.encode()
            whl.writestr(name, data)
            record.append(f"{name},{digest(data)},{len(data)}")
        record.append(f"{DIST}/RECORD,,")
        whl.writestr(f"{DIST}/RECORD", "\n".join(record) + "\n")
    print(path)


if __name__ == "__main__":
    main(sys.argv[1])
