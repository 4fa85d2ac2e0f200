"""Method options that a config gets wrong fail when the method is built, with one line naming the key."""

import pytest

import methods
from configs import graph_tu, simcse_shapes, timeseries_ucr
from parallel import mesh as mesh_lib


def _build(config):
  return methods.get(config.method)(config, mesh_lib.build_mesh(config.mesh))


@pytest.mark.parametrize(
  "module,key,value,match",
  [
    (timeseries_ucr, "jiter_sigma", 0.1, r"config.augment.jiter_sigma .*did you mean jitter_sigma"),
    (timeseries_ucr, "kind", "fourier", "tstcc, ts2vec"),
    (graph_tu, "strenght", 0.1, r"config.augment.strenght .*did you mean strength"),
  ],
)
def test_view_options_are_checked_against_the_view_function(module, key, value, match):
  config = module.get_config("tiny")
  config.augment[key] = value
  with pytest.raises(ValueError, match=match):
    _build(config)


@pytest.mark.parametrize(
  "arg,changes,match",
  [
    ("tiny,refined", dict(loss=dict(name="supcon")), "reference=True weighs pairs"),
    ("tiny,esimcse,debiased", {}, "queue_size=48 needs loss.name='supcon'"),
    ("tiny,whitened,debiased", dict(simcse=dict(whitening_views=3)), "exactly 2"),
    ("tiny", dict(loss=dict(name="nt_xent")), "loss.name is one of"),
  ],
)
def test_simcse_family_options_that_do_not_combine_are_named(arg, changes, match):
  config = simcse_shapes.get_config(arg)
  for block, values in changes.items():
    config[block].update(values)
  with pytest.raises(ValueError, match=match):
    _build(config)
