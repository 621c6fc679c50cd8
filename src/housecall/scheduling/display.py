"""Names for the pages: who a visit is with, where, and how (read once per page)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from housecall.scheduling import model
from housecall.scheduling.model import Visit
from housecall.web.i18n import _
from housecall.web.records import Records
from housecall.workspace.inbox import person_name


@dataclass(frozen=True)
class Shown:
    """A Visit with the names the reader may see."""

    visit: Visit
    clinician: str
    patient: str
    place: str  # the Location's name, "Video" or "Phone"
    mode_label: str

    @property
    def id(self) -> str:
        return self.visit.id


PREFETCH_CHUNK = 200  # ids per search, well under the store's _count cap


class Names:
    """Practitioner, Patient and Location names, each read at most once per page."""

    def __init__(self, rec: Records) -> None:
        self.rec = rec
        self.cache: dict[str, dict[str, Any] | None] = {}

    async def get(self, res_type: str, res_id: str | None) -> dict[str, Any] | None:
        if not res_id:
            return None
        key = f"{res_type}/{res_id}"
        if key not in self.cache:
            self.cache[key] = await self.rec.read(res_type, res_id)
        return self.cache[key]

    async def prefetch(self, visits: list[Visit], *, with_patient: bool = False) -> None:
        """Read the names a list of visits shows in one search per type (a week's calendar names
        dozens of patients; one read each made the page slow)."""
        wanted: dict[str, set[str]] = {"Practitioner": set(), "Patient": set(), "Location": set()}
        for v in visits:
            wanted["Practitioner"].add(v.practitioner or "")
            if with_patient:
                wanted["Patient"].add(v.patient or "")
            if v.mode not in model.VIRTUAL_MODES:
                wanted["Location"].add(v.location or "")
        for res_type, ids in wanted.items():
            todo = sorted(i for i in ids if i and f"{res_type}/{i}" not in self.cache)
            for n in range(0, len(todo), PREFETCH_CHUNK):
                chunk = todo[n : n + PREFETCH_CHUNK]
                page = await self.rec.search(
                    res_type, [("_id", ",".join(chunk)), ("_count", str(len(chunk)))]
                )
                found = {r["id"]: r for r in page}
                for i in chunk:  # unknown or not visible: None, as a read would give
                    self.cache[f"{res_type}/{i}"] = found.get(i)

    async def person(self, res_type: str, res_id: str | None) -> str:
        return person_name(await self.get(res_type, res_id))

    async def place(self, mode: str, location_id: str | None) -> str:
        if mode == model.VIDEO:
            return _("Video")
        if mode == model.PHONE:
            return _("Phone")
        if mode == model.CHAT:
            return _("Chat")
        loc = await self.get("Location", location_id)
        return str((loc or {}).get("name") or _("In person"))

    async def shown(self, v: Visit, *, with_patient: bool = False) -> Shown:
        return Shown(
            visit=v,
            clinician=await self.person("Practitioner", v.practitioner),
            patient=await self.person("Patient", v.patient) if with_patient else "",
            place=await self.place(v.mode, v.location),
            mode_label=model.mode_label(v.mode),
        )
