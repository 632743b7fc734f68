"""The Python examples (``examples/python/``) run as a user runs them, on both engines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def _run(name: str, db: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), db], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "JOBQ_DB"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_campaign_flow(db: str, tmp_path: Path) -> None:
    out = _run("campaign.py", db, tmp_path)
    assert "7 jobs, final is blocked" in out
    assert "the composite read 4 scenes" in out and "final video: s3://media/spring-sale/final.mp4 (24 s)" in out
    assert "cost 52 cents" in out


def test_the_ingestion_queue(db: str, tmp_path: Path) -> None:
    out = _run("ingestion.py", db, tmp_path)
    assert out.count("ingested ads/") == 3
    assert "dead letter: ads/broken.mp4: CORRUPT" in out and "CorruptFile: ads/broken.mp4" in out
    assert "after the retry: ads/broken.mp4 ingested, health healthy" in out


def test_the_cad_extraction_with_a_process_pool(db: str, tmp_path: Path) -> None:
    out = _run("cad_extraction.py", db, tmp_path)
    assert "6 extraction jobs persisted" in out
    assert out.count(" entities (process ") == 6
    assert "none of them this one: True" in out
