"""Reading pixels: window -> tiles -> ranges (plan), fetch, decode, assemble."""

from rasteret.read.cog import CogFile, open_cog, open_cog_async, read_header
from rasteret.read.plan import ReadPlan, Window, plan_window

__all__ = [
    "CogFile",
    "ReadPlan",
    "Window",
    "open_cog",
    "open_cog_async",
    "plan_window",
    "read_header",
]
