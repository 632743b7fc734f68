"""CAD extraction: drawings (PDF, DXF, IFC, STEP) are submitted through the app, persisted
before any worker runs, and extracted by CPU-bound handlers in a pool of warm processes
(real parallelism past the GIL; a fresh child every few jobs, for parsers that leak).

    python examples/python/cad_extraction.py [DB]  # DB: a file (cad.db) or postgres://…

The worker it starts is the one you would run in production:

    JOBQ_DB=cad.db python -m jobq worker cad_extraction:queue --pool process --concurrency 2 \\
        --max-jobs-per-child 10
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import zlib

import jobq

HERE = os.path.dirname(os.path.abspath(__file__))
DB = os.environ.get("JOBQ_DB") or (sys.argv[1] if len(sys.argv) > 1 else "cad.db")
queue = jobq.Queue(DB)

FORMATS = {".pdf": "pdf", ".dxf": "dxf", ".ifc": "ifc", ".step": "step"}


@dataclasses.dataclass
class Extraction:
    file: str
    format: str
    pages: int


@queue.handler("extract", timeout="20m", max_attempts=3)
def extract(job: jobq.Job[Extraction]) -> dict:
    drawing = job.input
    entities = 0
    for page in range(drawing.pages):
        # CPU-bound parsing: holds the GIL, which is why these run in processes.
        blob = (drawing.file * 2000).encode()
        for _ in range(20):
            blob = zlib.compress(blob)[:4096] * 4
        entities += len(blob) % 97 + 1
        job.progress((page + 1) / drawing.pages, stage=f"page {page + 1}/{drawing.pages}")
    return {"file": drawing.file, "format": drawing.format, "entities": entities, "worker_pid": os.getpid()}


def submit(path: str, pages: int) -> jobq.JobHandle:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise jobq.InvalidInput(f"invalid file: {path} is not one of {', '.join(FORMATS)}")
    return extract.enqueue(Extraction(path, FORMATS[ext], pages), key=f"extract-{path}")


def main() -> None:
    files = {"plans/site.pdf": 3, "plans/floor.dxf": 2, "model/tower.ifc": 4, "parts/bracket.step": 2,
             "plans/roof.pdf": 1, "model/annex.ifc": 2}
    handles = {path: submit(path, pages) for path, pages in files.items()}
    # Persisted before any worker starts: queued, no attempt, no progress, not started.
    for path, h in handles.items():
        doc = h.job()
        assert doc["status"] == "queued" and doc["attempts"] == 0 and doc["progress"] == 0
        assert doc["started_at"] is None and doc["completed_at"] is None
    print(f"{len(handles)} extraction jobs persisted; starting a pool of 2 processes")

    env = {**os.environ, "JOBQ_DB": DB, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-m", "jobq", "worker", "cad_extraction:queue", "--pool", "process",
                    "--concurrency", "2", "--max-jobs-per-child", "3", "--once"], env=env, check=True)

    pids = set()
    for path, h in handles.items():
        out = h.result(timeout=60)
        pids.add(out["worker_pid"])
        print(f"{path}: {out['format']}, {out['entities']} entities (process {out['worker_pid']})")
    print(f"extracted in {len(pids)} worker processes, none of them this one: {os.getpid() not in pids}")


if __name__ == "__main__":
    main()
