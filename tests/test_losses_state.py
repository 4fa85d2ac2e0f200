"""Loss state through `combine` (iSogCLR's per-example moving averages persist), a learnable temperature as a loss
option, and MV-InfoNCE with two views against NT-Xent."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import losses

from conftest import nt_xent_denominators


def _normal(seed, *shape):
  return jax.random.normal(jax.random.key(seed), shape)


ISOGCLR_TERMS = [
  dict(name="nt_xent", weight=0.5, inputs=("z1", "z2"), kwargs=dict(temperature=0.2)),
  dict(name="isogclr", key="robust", inputs=("z1", "z2", "tau", "tau"), kwargs=dict(gamma=0.8, rho=8.0)),
]


def test_combine_carries_isogclr_state_from_step_to_step():
  n, table = 8, losses.initial_state(ISOGCLR_TERMS, 20)
  assert set(table) == {"robust"} and table["robust"]["s_x"].shape == (20,)
  ids = jnp.arange(3, 3 + n)  # the batch's example ids: rows of the dataset-sized table
  tau = jnp.linspace(0.05, 0.1, n)
  step = jax.jit(lambda out, rows: losses.combine(ISOGCLR_TERMS, out, state={"robust": rows}))

  @jax.jit
  def direct(out, rows):
    value, rows = losses.isogclr(out["z1"], out["z2"], tau, tau, rows, gamma=0.8, rho=8.0)
    return 0.5 * losses.nt_xent(out["z1"], out["z2"], temperature=0.2) + value, value, rows

  rows_direct = losses.isogclr_init_state(n)
  for i in range(2):
    out = {"z1": _normal(2 * i, n, 4), "z2": _normal(2 * i + 1, n, 4), "tau": tau}
    rows = jax.tree.map(lambda t: t[ids], table["robust"])
    total, metrics, new = step(out, rows)
    table["robust"] = jax.tree.map(lambda t, r: t.at[ids].set(r), table["robust"], new["robust"])
    want_total, want, rows_direct = direct(out, rows_direct)
    np.testing.assert_allclose(metrics["robust"], want, rtol=1e-5)
    np.testing.assert_allclose(total, want_total, rtol=1e-5)
    for k in rows_direct:
      # s sums exp(a - max a) over the batch: float32 rounding is relative to its largest rows.
      scale = float(jnp.max(jnp.abs(rows_direct[k])))
      np.testing.assert_allclose(new["robust"][k], rows_direct[k], rtol=1e-5, atol=1e-6 * scale)
  assert float(jnp.min(table["robust"]["s_x"][ids])) > 0 and float(jnp.max(table["robust"]["s_x"][:3])) == 0


def test_combine_refuses_to_drop_loss_state():
  out = {"z1": jnp.ones((4, 3)), "z2": jnp.ones((4, 3)), "tau": jnp.ones(4)}
  with pytest.raises(ValueError, match="keeps per-example state"):
    losses.combine(ISOGCLR_TERMS[1:], out)
  assert losses.is_stateful("isogclr") and not losses.is_stateful("nt_xent")


def test_learnable_temperature_is_a_loss_option_of_a_config_term():
  config = ml_collections.ConfigDict()
  config.terms = [dict(name="nt_xent", inputs=("z1", "z2"), log_temperature="log_tau", temperature_range=(0.05, 1.0))]
  z1, z2 = _normal(0, 8, 4), _normal(1, 8, 4)

  def total(log_tau):
    return losses.combine(config.terms, {"z1": z1, "z2": z2, "log_tau": log_tau})[0]

  learned = jax.jit(jax.value_and_grad(total))
  fixed = jax.jit(jax.value_and_grad(lambda t: losses.nt_xent(z1, z2, temperature=jnp.exp(t))))
  value, grad = learned(jnp.log(0.2))
  want, want_grad = fixed(jnp.log(0.2))
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-4)
  # Below the range the temperature is clipped to its minimum and learns nothing.
  value, grad = learned(jnp.log(0.01))
  np.testing.assert_allclose(value, fixed(jnp.log(0.05))[0], rtol=1e-5)
  assert float(grad) == 0.0


def test_learnable_temperature_needs_its_output():
  terms = [dict(name="nt_xent", inputs=("z1", "z2"), log_temperature="log_tau")]
  with pytest.raises(ValueError, match="log_tau"):
    losses.combine(terms, {"z1": jnp.ones((4, 3)), "z2": jnp.ones((4, 3))})


def test_mv_info_nce_with_two_views_is_nt_xent_with_the_denominators_averaged():
  """Koromilas et al.'s MV-InfoNCE (reference MVINFONCE) sums the V denominators of a sample in one log:
  with V = 2 it is mean_i [log((D1 + D2) / 2) - s_i], NT-Xent's mean_i [(log D1 + log D2) / 2 - s_i] with the
  arithmetic instead of the geometric mean of D1, D2. So it is >= NT-Xent, and equal when D1 = D2."""
  z1, z2, tau = np.asarray(_normal(0, 16, 8)), np.asarray(_normal(1, 16, 8)), 0.5
  both = jax.jit(
    lambda a, b: (losses.mv_info_nce(jnp.stack([a, b]), temperature=tau), losses.nt_xent(a, b, temperature=tau))
  )
  mv, ntx = (float(x) for x in both(z1, z2))
  s, d1, d2 = nt_xent_denominators(z1, z2, tau)
  np.testing.assert_allclose(mv, np.mean(np.log((d1 + d2) / 2) - s), rtol=1e-5)
  np.testing.assert_allclose(ntx, np.mean((np.log(d1) + np.log(d2)) / 2 - s), rtol=1e-5)
  assert mv > ntx
  # Identical views: D1 = D2 for every sample, and the two losses agree.
  same = jnp.stack([z1, z1])
  np.testing.assert_allclose(
    losses.mv_info_nce(same, temperature=tau), losses.nt_xent(z1, z1, temperature=tau), rtol=1e-5
  )
