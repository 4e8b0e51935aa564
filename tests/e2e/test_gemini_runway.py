"""One generation on each of the gemini (Veo and Omni) and runway protocols, through the real
pipeline.

Every core stage is its own process on a real Kafka broker and database, the clients talk HTTP to
the emulator; each request must end `stored`, with one job at its provider and a playable MP4.
The Omni request asks 5 s and gets the model's 10 s clip: stored, since Omni takes no length.
"""

from __future__ import annotations

from tests.e2e.conftest import EMULATOR_KEY, MakePipeline
from tests.e2e.harness import make_request
from vidpipe.dev.emulator.gemini import OMNI_SECONDS
from vidpipe.dev.emulator.server import EmulatorThread

CORE = ("submitter", "poller", "fetcher", "recorder")


async def test_a_veo_an_omni_and_a_runway_generation_are_stored(
    make_pipeline: MakePipeline, roomy_emulator: EmulatorThread
) -> None:
    emulator = roomy_emulator
    pipeline = await make_pipeline(
        {
            "VIDPIPE_GEMINI_BASE_URL": emulator.base_url,
            "VIDPIPE_GEMINI_API_KEY": EMULATOR_KEY,
            "VIDPIPE_RUNWAY_BASE_URL": emulator.base_url,
            "VIDPIPE_RUNWAY_API_KEY": EMULATOR_KEY,
        }
    )
    for name in CORE:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    prompts = {
        "gemini": f"a heron {prefix}",
        "omni": f"an otter {prefix}",
        "runway": f"a lynx {prefix}",
    }
    requests = [
        make_request(prefix, "veo", prompt=prompts["gemini"], provider="gemini", seconds=4),
        make_request(
            prefix,
            "omni",
            prompt=prompts["omni"],
            provider="gemini",
            model="gemini-omni-1.1-flash",
            seconds=5,
        ),
        make_request(prefix, "runway", prompt=prompts["runway"], provider="runway", seconds=5),
    ]
    await pipeline.publish(*requests)
    ids = [r.request_id for r in requests]
    views = await pipeline.wait_for(
        ids, until=lambda v: v.status in ("stored", "failed"), timeout_s=120
    )
    for request in requests:
        view = views[request.request_id]
        assert view.status == "stored", (request.provider, view.error_message)
        assert view.provider == request.provider and view.placeholder is False
    for name, prompt in prompts.items():
        jobs = [job for job in list(emulator.state.jobs.values()) if job.prompt == prompt]
        assert [job.protocol for job in jobs] == ["gemini" if name == "omni" else name]
    # Held to the asked 5 s (within 1 s), this 10 s clip would have been refused as invalid.
    (omni_job,) = [j for j in list(emulator.state.jobs.values()) if j.prompt == prompts["omni"]]
    assert omni_job.seconds == OMNI_SECONDS == 10
