"""Active learning in one package.

* :mod:`xlgen.active.acquisition`: the strategy registry (``STRATEGIES``; one class per acquisition
  function, each saying what it ``needs`` decoded) and the pool outputs they read;
* :mod:`xlgen.active.ensemble`: ensemble decoding (beam, sampling and dropout members);
* :mod:`xlgen.active.selection`: :func:`~xlgen.active.selection.select_batch`, the one function that
  decodes what a strategy needs, scores, ranks, applies pool sub-sampling, the noise cut and diversity;
  the CLI's ``xlgen select``, the simulation and the service's ``/v1/al/next-batch`` all call it;
* :mod:`xlgen.active.simulation`: the simulation's loop with an injected learner (training supplies it);
* :mod:`xlgen.active.curves`: deficiency, label share to reach a reference, plots.
"""
