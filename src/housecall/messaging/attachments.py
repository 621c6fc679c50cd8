"""Message attachments: images (PNG, JPEG) and PDF, recognised by their first bytes, size-limited.

The type a browser declares and the file's name are not trusted: the content decides, and a file
is served back only with the type its content proved (as a download, ``nosniff``). The bytes are
kept as a FHIR Binary the message's ``payload.contentAttachment.url`` names; Binary is out of reach
of people on the API (``access/policy.RESTRICTED_TYPES``), so the pages read and write it as the
system, only after the person's access to the message itself was checked (``model.py``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from housecall.web.i18n import _

MAX_BYTES = 5 * 1024 * 1024
# Content type -> (leading bytes, file extension).
SIGNATURES: dict[str, tuple[bytes, str]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n", ".png"),
    "image/jpeg": (b"\xff\xd8\xff", ".jpg"),
    "application/pdf": (b"%PDF-", ".pdf"),
}
EXTENSIONS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".pdf": "application/pdf"}


class Refused(ValueError):
    """The file cannot be attached; the message (translated) says why, beside the field."""


@dataclass(frozen=True)
class File:
    """An accepted attachment: its bytes, the type its content proved, and a safe file name."""

    data: bytes
    content_type: str
    filename: str

    def attachment(self, binary_id: str) -> dict[str, object]:
        """The FHIR Attachment that points at the stored Binary."""
        return {
            "contentType": self.content_type,
            "url": f"Binary/{binary_id}",
            "size": len(self.data),
            "hash": base64.b64encode(hashlib.sha1(self.data, usedforsecurity=False).digest()).decode(),
            "title": self.filename,
        }

    def binary(self, patient_id: str) -> dict[str, object]:
        """The Binary resource holding the bytes, its security context the patient's record."""
        return {
            "resourceType": "Binary",
            "contentType": self.content_type,
            "securityContext": {"reference": f"Patient/{patient_id}"},
            "data": base64.b64encode(self.data).decode(),
        }


def sniff(data: bytes) -> str | None:
    """The content type the bytes prove, or None."""
    for content_type, (magic, _ext) in SIGNATURES.items():
        if data.startswith(magic):
            return content_type
    return None


def check(data: bytes, filename: str) -> File:
    """Accept ``data`` as an attachment or raise ``Refused`` with the reason to show."""
    if not data:
        raise Refused(_("The file is empty. Choose another file."))
    if len(data) > MAX_BYTES:
        raise Refused(_("The file must be smaller than %(mb)s MB.") % {"mb": MAX_BYTES // (1024 * 1024)})
    content_type = sniff(data)
    if content_type is None:
        raise Refused(_("The file must be a photo (PNG or JPEG) or a PDF."))
    return File(data, content_type, safe_name(filename, content_type))


def safe_name(filename: str, content_type: str) -> str:
    """A file name fit to show and to send back: no folders, no control characters, at most 100
    characters, and an extension that matches the proven type."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    name = name.strip().strip(".") or "attachment"
    stem, dot, ext = name.rpartition(".")
    if not dot or EXTENSIONS.get("." + ext.lower()) != content_type:
        stem = name
        ext = SIGNATURES[content_type][1].lstrip(".")
    return f"{stem[:90]}.{ext.lower()}"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name (RFC 6266, RFC 5987)."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", ascii_name).strip() or "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def decode(binary: dict[str, object]) -> bytes:
    data = binary.get("data")
    return base64.b64decode(data) if isinstance(data, str) else b""
