"""rasteret's local test bed: servers and synthetic data for tests, benchmarks and
the demo.

A development-only package next to ``rasteret/`` (installed editable by the
Makefile, never in rasteret's wheel). It needs the ``dev`` extra (moto, rustac,
rasterio, azure-storage-blob) and nginx.
"""

#: Seconds a test waits on a subprocess, a worker or a queue before calling it hung.
#: A guard against hangs, not a bound on speed: generous, because CI shares its two
#: cores with whatever else runs and a cold start of torch alone can take a minute.
HANG_GUARD = 600
