"""The campaign generator: four scenes, a voice-over and a music track are made in
parallel, then one composite job reads its parts by ref and assembles the video.

    python examples/python/campaign.py [DB]        # DB: a file (campaign.db) or postgres://…

One flow, submitted whole (all of its jobs or none); each campaign belongs to its customer
(a scoped queue), reports its stage and progress as it goes, and counts its cost.
"""

from __future__ import annotations

import dataclasses
import sys

import jobq

DB = sys.argv[1] if len(sys.argv) > 1 else "campaign.db"
queue = jobq.Queue(DB, owner="acme")


@dataclasses.dataclass
class Scene:
    campaign: str
    number: int
    prompt: str


@queue.handler("scene_video", timeout="10m", max_attempts=3)
def scene_video(job: jobq.Job[Scene]) -> dict:
    scene = job.input
    job.progress(0.2, stage="rendering")
    job.cost(12)  # what the video model charged, in cents
    job.progress(0.9, stage="uploading")
    return {"url": f"s3://media/{scene.campaign}/scene-{scene.number}.mp4", "seconds": 6}


@queue.handler("voiceover", max_attempts=3)
def voiceover(job: jobq.Job) -> dict:
    job.stage("speaking")
    job.cost(3)
    return {"url": f"s3://media/{job.input['campaign']}/voice.mp3", "words": len(job.input["script"].split())}


@queue.handler("music")
def music(job: jobq.Job) -> dict:
    job.cost(1)
    return {"url": f"s3://media/{job.input['campaign']}/music-{job.input['mood']}.mp3"}


@queue.handler("composite", timeout="30m")
def composite(job: jobq.Job) -> dict:
    parts = job.dependency_outputs()  # by ref: scene1…scene4, voice, music
    scenes = [parts[f"scene{n}"] for n in range(1, 5)]
    job.progress(0.5, stage="compositing")
    return {
        "video": f"s3://media/{job.input['campaign']}/final.mp4",
        "scenes": [s["url"] for s in scenes],
        "voice": parts["voice"]["url"],
        "music": parts["music"]["url"],
        "seconds": sum(s["seconds"] for s in scenes),
    }


def submit(campaign: str) -> jobq.FlowResult:
    """The campaign's jobs, as one flow; submitting it again (same key) changes nothing."""
    flow = jobq.Flow("campaign", metadata={"campaign": campaign}, key=f"campaign-{campaign}")
    prompts = ["sunrise over the city", "a runner", "the product", "the logo"]
    for n, prompt in enumerate(prompts, start=1):
        flow.job(f"scene{n}", "scene_video", Scene(campaign, n, prompt))
    flow.job("voice", "voiceover", {"campaign": campaign, "script": "Run further. Run jobq."})
    flow.job("music", "music", {"campaign": campaign, "mood": "upbeat"})
    flow.job("final", "composite", {"campaign": campaign},
             after=["scene1", "scene2", "scene3", "scene4", "voice", "music"])
    return queue.submit_flow(flow)


def main() -> None:
    flow = submit("spring-sale")
    again = submit("spring-sale")
    assert again.already_existed and again.group_id == flow.group_id
    print(f"campaign flow {flow.group_id}: {len(flow)} jobs, final is {flow['final'].status()}")

    summary = queue.worker(concurrency=4).run_until_idle()
    video = flow["final"].result(timeout=60)
    cost = sum(queue.get(h.id)["cost_cents"] for h in flow.values())
    print(f"ran {summary.succeeded} jobs; the composite read {len(video['scenes'])} scenes, "
          f"{video['voice']} and {video['music']}")
    print(f"final video: {video['video']} ({video['seconds']} s), cost {cost} cents")


if __name__ == "__main__":
    main()
