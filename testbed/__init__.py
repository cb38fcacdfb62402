"""rasteret's local test bed: servers and synthetic data for tests, benchmarks and
the demo.

A development-only package next to ``rasteret/`` (installed editable by the
Makefile, never in rasteret's wheel). It needs the ``dev`` extra (moto, rustac,
rasterio, azure-storage-blob) and nginx.
"""
