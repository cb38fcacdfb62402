"""Writing Cloud-Optimized GeoTIFFs tile by tile, in bounded memory (no torch)."""

from rasteret.write.cog import CLASS_NAMES_ITEM, CogWriter, check_output, finished_rows
from rasteret.write.overviews import OverviewResampling

__all__ = ["CLASS_NAMES_ITEM", "CogWriter", "OverviewResampling", "check_output",
           "finished_rows"]
