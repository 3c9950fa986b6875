"""`tip-train` in a subprocess, for the trainer tests.

--kill_after_save=N   SIGKILLs this process once step N's checkpoint is on disk: a
                      crash at the worst moment, with no chance to clean up.
--dump_params=PATH    after training, writes this process's copy of the params
                      (`PATH` gets `.<process index>.npz`).
"""

import os
import signal

import jax
import numpy as np
from absl import app, flags
from flax.traverse_util import flatten_dict

from tip_jax import main as main_lib
from tip_jax.train import checkpoint, trainer

_KILL = flags.DEFINE_integer("kill_after_save", None, "Step whose save ends in SIGKILL.")
_DUMP = flags.DEFINE_string("dump_params", None, "Where to write the final params.")


def main(argv):
  if _KILL.value is not None:
    save = checkpoint.save

    def save_then_die(mngr, step, *args, **kwargs):
      out = save(mngr, step, *args, **kwargs)
      if step == _KILL.value:
        mngr.wait_until_finished()
        os.kill(os.getpid(), signal.SIGKILL)
      return out

    checkpoint.save = save_then_die
  if _DUMP.value:
    train = trainer.train

    def train_and_dump(*args, **kwargs):
      state = train(*args, **kwargs)
      local = {"/".join(k): np.asarray(v.addressable_shards[0].data)
               for k, v in flatten_dict(state.params).items()}
      np.savez(f"{_DUMP.value}.{jax.process_index()}.npz", **local)
      return state

    trainer.train = train_and_dump
  main_lib.main(argv)


if __name__ == "__main__":
  app.run(main)
