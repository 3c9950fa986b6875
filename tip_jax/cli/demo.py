"""Usage: tip-demo --checkpoint CKPT [--host 127.0.0.1] [--port 7860] [options]

    tip-demo --checkpoint /tmp/tip_tiny --steps 20 --port 7860

The interactive web demo: restore your own photos in a browser.

Serves one page (gradio) at http://HOST:PORT: upload an image, give a semantic prompt
and a restoration prompt (typed, or built from deblur / upsample / denoise / JPEG
controls), pick steps, guidance and seed, and compare input and restoration in a
before/after slider. It listens on 127.0.0.1 only unless --host says otherwise
(--host 0.0.0.0 shows it to your network). Requests are restored one at a time, the
others wait in a queue; uploads above --max_upload_mb or restorations above
--max_side pixels a side are refused with one line. Uploads and results live in a
private temporary folder, deleted when the server stops. The page's Estimate button
fills the restoration prompt from the photo with the degradation estimator (--estimator,
default: the installed one). The sampling flags
(--sampler, --tile, --color_fix, --strength, ...) apply to every request; --semantic,
--steps, --guidance and --seed are the page's first values. Needs gradio:
pip install "tip_jax[demo]". Ctrl-C stops it.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile

from absl import flags

from tip_jax.cli import common, estimating, sampling

PROG = "tip-demo"
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every "
                            "interface).")
_PORT = flags.DEFINE_integer("port", 7860, "Port to listen on.")
_MAX_UPLOAD_MB = flags.DEFINE_float("max_upload_mb", 10.0, "Largest upload, in MiB.")
_MAX_SIDE = flags.DEFINE_integer("max_side", 1024, "Longest side restored, in pixels "
                                 "(after any \"Upsample to\" factor).")
_QUEUE = flags.DEFINE_integer("queue", 16, "Requests that may wait; more are turned away.")


def main(argv: list[str]) -> None:
  if len(argv) != 1:
    common.fail(PROG, f"takes no positional arguments (usage: {PROG} --checkpoint CKPT)")
  sampling.check_options(PROG)
  if _MAX_UPLOAD_MB.value <= 0 or _MAX_SIDE.value < 1 or _QUEUE.value < 1:
    common.fail(PROG, "--max_upload_mb, --max_side and --queue must be positive")
  with tempfile.TemporaryDirectory(prefix="tip-demo-") as cache:
    # Where gradio keeps uploads and the images it serves; set before gradio is imported
    # (it fixes some of its paths then). The folder goes when the server stops, by Ctrl-C
    # or by SIGTERM, which stops it the same way.
    os.environ["GRADIO_TEMP_DIR"] = cache
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
      from tip_jax import demo  # gradio is an optional dependency: the `demo` extra
    except ImportError as e:
      common.fail(PROG, f"needs gradio ({e}): pip install \"tip_jax[demo]\"")
    restorer = sampling.load_restorer(PROG)
    if estimating.ESTIMATOR.value:   # else the installed one, loaded on the first estimate
      restorer.estimator = estimating.load(PROG)
    limits = demo.Limits(max_upload_mb=_MAX_UPLOAD_MB.value, max_side=_MAX_SIDE.value)
    page = demo.build(restorer, limits, sampling.restore_options())
    page.queue(max_size=_QUEUE.value, default_concurrency_limit=1)
    page.launch(server_name=_HOST.value, server_port=_PORT.value,
                max_file_size=int(limits.max_upload_mb * 2**20))


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], common, sampling, estimating])


if __name__ == "__main__":
  run()
