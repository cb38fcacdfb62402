"""Local servers and synthetic data for tests, benchmarks and the demo.

Nothing here is imported by ``import rasteret``; it needs the ``dev`` extra
(moto, rustac, rasterio) and nginx.
"""
