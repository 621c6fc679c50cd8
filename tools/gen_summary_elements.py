#!/usr/bin/env python3
"""Generate the top-level summary elements of every R4 resource type (``_summary=true``).

Reads ``../shared/fixtures/fhir-r4-definitions/profiles-resources.json`` (HL7 R4 StructureDefinitions)
and writes ``src/housecall/fhir/_summary_elements.json``: resource type -> {"names": [...],
"choices": [...]}, where ``choices`` are the bases of ``[x]`` elements (``value`` for ``value[x]``).
Run it again only when the definitions change; the output is committed.
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "fixtures" / "fhir-r4-definitions" / "profiles-resources.json"
TARGET = ROOT / "src" / "housecall" / "fhir" / "_summary_elements.json"


def main() -> None:
    bundle = json.loads(SOURCE.read_text())
    out: dict[str, dict[str, list[str]]] = {}
    for entry in bundle["entry"]:
        sd = entry["resource"]
        if (
            sd.get("resourceType") != "StructureDefinition"
            or sd.get("kind") != "resource"
            or sd.get("abstract")
        ):
            continue
        names: set[str] = set()
        choices: set[str] = set()
        for el in sd["snapshot"]["element"]:
            parts = el["path"].split(".")
            if len(parts) != 2 or not el.get("isSummary"):
                continue
            name = parts[1]
            if name.endswith("[x]"):
                choices.add(name[:-3])
            else:
                names.add(name)
        out[sd["type"]] = {"names": sorted(names), "choices": sorted(choices)}
    TARGET.write_text(json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {TARGET} ({len(out)} types)")


if __name__ == "__main__":
    main()
