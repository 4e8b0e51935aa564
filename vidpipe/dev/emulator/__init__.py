"""A local stand-in for the paid video APIs, speaking every provider protocol over real HTTP.

azure-sora under /openai/v1/video/generations (api-version=preview), openai-videos under /v1
and /openai/v1, replicate under /v1/predictions and /v1/models, fal's queue at the root (as
queue.fal.run: `fal.py`), gemini (Veo operations, Omni interactions) under /v1beta, runway's
tasks under /v1/text_to_video, /v1/image_to_video and /v1/tasks. Behaviour comes from
`EmulatorConfig`, the /_emulator/config admin endpoint, and `[emulator:key=value]` directives in
prompts. An `Idempotency-Key` header on a /v1/videos or Azure create returns the job first
created with that key: an emulator convenience, not a documented provider feature (fal,
replicate, gemini and runway ignore it, as those providers do).
"""

from vidpipe.dev.emulator.app import create_app
from vidpipe.dev.emulator.config import Directives, DownloadMode, EmulatorConfig, parse_directives
from vidpipe.dev.emulator.server import EmulatorServer, EmulatorThread, serve
from vidpipe.dev.emulator.state import EmulatorState

__all__ = [
    "Directives",
    "DownloadMode",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "EmulatorThread",
    "create_app",
    "parse_directives",
    "serve",
]
