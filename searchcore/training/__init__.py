"""Training and evaluation: the code that made the shipped models, usable on any shop's catalog.

* shopper-like photo degradations live in the core (:mod:`searchcore.degrade`: training's
  degraded view, evaluation's queries and the match gate's calibration share them);
* :mod:`~searchcore.training.data` - product splits, texts built from titles and attributes,
  photo loading, a model's training record (which rows it trained on);
* :mod:`~searchcore.training.batches` - finetune's batches (clean and shopper views);
* :mod:`~searchcore.training.metrics` - retrieval and image-quality metrics (pure functions);
* :mod:`~searchcore.training.evaluate` and :mod:`~searchcore.training.report` - ``searchcore
  eval``: JSON, a markdown table and plots;
* :mod:`~searchcore.training.finetune` - ``searchcore finetune``: contrastive image-text (plus
  image-image) training of an open_clip model;
* :mod:`~searchcore.training.tune` - ``searchcore tune``: the whole loop (split, finetune,
  index build, evaluation next to the baselines, upscaling verdict, report);
* :mod:`~searchcore.training.upscaler` - ``searchcore train-upscaler`` and the shipped compact
  Real-ESRGAN generator;
* :mod:`~searchcore.training.strategies` - the upscaling strategies eval and tune compare
  (the commands themselves are :mod:`searchcore.cli.training`).

Importing this package is cheap; torch and friends load inside the functions that use them.
It imports the core; only the CLI (:mod:`searchcore.cli.training`) and tests import it, never
the core or the page.
"""
