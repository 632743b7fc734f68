"""The ingestion queue: video files are ingested by workers that report their stage and
progress and keep their heartbeat while they work; a file is ingested once however often it
is submitted (its idempotency key), and a corrupt file ends in the dead letter with its
traceback, where an operator finds it and, once the file is fixed, retries it.

    python examples/python/ingestion.py [DB]       # DB: a file (ingestion.db) or postgres://…
"""

from __future__ import annotations

import hashlib
import sys
import time

import jobq

DB = sys.argv[1] if len(sys.argv) > 1 else "ingestion.db"
queue = jobq.Queue(DB)

# The files to ingest (a real app reads them from a bucket): one is corrupt.
FILES = {
    "ads/spring.mp4": b"\x00\x00\x00\x18ftypmp42 spring",
    "ads/summer.mp4": b"\x00\x00\x00\x18ftypmp42 summer",
    "ads/broken.mp4": b"not a video at all",
    "ads/autumn.mp4": b"\x00\x00\x00\x18ftypmp42 autumn",
}
STAGES = ["download", "probe", "transcribe", "embed", "store"]


class CorruptFile(Exception):
    """The file is not a video: retrying will not help, but the error is worth keeping."""


def probe(path: str, data: bytes) -> None:
    if b"ftyp" not in data[:12]:
        raise CorruptFile(f"{path}: no ftyp box in the first 12 bytes")


@queue.handler("ingest", timeout="30m", max_attempts=5)
def ingest(job: jobq.Job) -> dict:
    path = job.input["path"]
    data = FILES[path]
    for i, stage in enumerate(STAGES):
        job.progress(i / len(STAGES), stage=stage)  # each report also refreshes the heartbeat
        if stage == "probe":
            try:
                probe(path, data)
            except CorruptFile as e:
                # Retrying will not mend the file: straight to the dead letter, traceback kept.
                raise jobq.Permanent(str(e), code="CORRUPT") from e
        time.sleep(0.02)  # the work; the worker's own thread keeps the heartbeat meanwhile
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "frames": len(data) * 10}


def submit(path: str) -> jobq.JobHandle:
    # The key is the file's content hash: the same file submitted twice is one job.
    digest = hashlib.sha256(FILES[path]).hexdigest()
    return ingest.enqueue({"path": path}, key=f"ingest-{digest}", queue="default")


def main() -> None:
    handles = {path: submit(path) for path in FILES}
    assert submit("ads/spring.mp4").already_existed  # a second upload of the same file
    queue.worker(concurrency=2, heartbeat_interval="1s").run_until_idle()

    for path, h in handles.items():
        try:
            out = h.result(timeout=30)
            print(f"ingested {path}: sha256 {out['sha256'][:12]}…")
        except jobq.JobFailed as failed:
            print(f"dead letter: {path}: {failed.code}: {failed.message}")
    dead = queue.list(status="failed")["jobs"]
    print(f"{len(dead)} job(s) in the dead letter; its error was raised from:")
    print("   ", queue.get(dead[0]["id"])["errors"][-1]["detail"].strip().splitlines()[-1])
    print(f"health: {queue.stats()['health']}")

    # The operator re-uploads the file and retries the job from the dead letter.
    FILES["ads/broken.mp4"] = b"\x00\x00\x00\x18ftypmp42 fixed"
    queue.retry(dead[0]["id"])
    queue.worker(concurrency=2).run_until_idle()
    print(f"after the retry: {handles['ads/broken.mp4'].result(timeout=30)['path']} ingested, "
          f"health {queue.stats()['health']}")


if __name__ == "__main__":
    main()
