"""Process-wide tuning of the serving process (and of the bulk import).

CPython's cyclic garbage collector walks every tracked object it holds in a generation. A serving
process keeps hundreds of thousands of long-lived objects (the compiled validator, templates, the
search-parameter tables, and one waiting-room socket's ~300 objects each), so each full collection
stopped every request for 0.5 to 1.1 s with 1,000 to 3,000 visit sockets open (bench/README.md,
"Visits"). Most garbage a request makes is acyclic and freed by reference counting at once; the
collector only has to find cycles, and can do so far less often.

``housecall import`` calls it too, before forking its workers: parsing and preparing Synthea
Bundles allocates millions of objects, few of them in cycles, and collections took a quarter of the
time (decision 0026).

``tune_gc`` runs once the app has started: one collection, then ``gc.freeze()`` moves everything
alive at start-up out of the collector's sight for good, and the thresholds make young
collections rarer (every 50,000 net allocations instead of 700) and full ones rarer still.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
