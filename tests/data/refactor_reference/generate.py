"""Makes the PNGs beside this file: txt2img on the embedded model, CPU, one torch thread.

They were made with the engine of commit fe2c151 (before issue 12's phases and hooks), extracted
without touching the working tree:

    git archive fe2c151 modules configs | tar -x -C /tmp/old && ln -s "$PWD/models" /tmp/old/models
    python tests/data/refactor_reference/generate.py /tmp/old tests/data/refactor_reference

tests/api/test_extensions_api.py checks that today's engine (with extensions loaded) gives the same pixels.
"""
import sys
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(1)
root, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
out.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(root))
from modules.app_factory import create_context  # noqa: E402
from modules.cmd_args import parse_args  # noqa: E402

try:
    from modules.generation.request import GenerationRequest  # noqa: E402
except ImportError:  # before the request types moved to modules/generation
    from modules.processing.request import GenerationRequest  # noqa: E402

CASES = {
    "euler_a_batch2": dict(prompt="a red circle", sampler_name="Euler a", steps=4, seed=1234, batch_size=2),
    "dpmpp2m_karras_neg": dict(prompt="a blue square on a white background", negative_prompt="red",
                               sampler_name="DPM++ 2M", scheduler="Karras", steps=5, seed=99, cfg_scale=5.0),
}

ctx = create_context(parse_args(["--data-dir", tempfile.mkdtemp(), "--use-cpu", "--ckpt", "shapes64"]))
try:
    for name, fields in CASES.items():
        result = ctx.queue.submit(GenerationRequest(save_images=False, **fields)).future.result()
        for i, image in enumerate(result.images):
            image.save(out / f"{name}_{i}.png")
finally:
    ctx.queue.shutdown()
