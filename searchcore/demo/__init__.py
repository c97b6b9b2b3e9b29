"""The demo shop and the shipped assets.

* :mod:`.synth` draws the deterministic demo shop (``searchcore catalog generate``, the app's
  first start);
* :mod:`.assets` is the one place that knows where the shipped models and examples live.

Importing the package imports nothing; anything in searchcore may import :mod:`.assets`.
"""
