"""Read options (:class:`ReadOptions`), string options (``on_error``, ``resampling``...)
and their one check."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

from pyproj import CRS

from rasteret.dates import DateRange, parse_date_range
from rasteret.errors import ConfigurationError

#: ``on_error`` of builds, reads and datasets: stop at the first failure, or leave
#: the failing asset, scene or chip out and go on.
OnError = Literal["raise", "skip"]
ON_ERROR: tuple[OnError, ...] = get_args(OnError)

#: How pixels are resampled when a read leaves the native grid.
Resampling = Literal["nearest", "bilinear"]
RESAMPLING: tuple[Resampling, ...] = get_args(Resampling)

#: Which scene wins where scenes overlap in a mosaic.
MosaicOrder = Literal["latest", "earliest", "least_cloudy"]
MOSAIC_ORDER: tuple[MosaicOrder, ...] = get_args(MosaicOrder)

#: Which scenes a sampled point takes: every covering scene, the newest (at or before
#: the point's date when points carry dates), or the nearest in time to its date.
Match = Literal["all", "latest", "nearest"]
MATCH: tuple[Match, ...] = get_args(Match)


def check_option(name: str, value: Any, choices: Collection[Any]) -> None:
    """Refuse ``value`` for the option ``name`` unless it is one of ``choices``.

    Raises:
        ConfigurationError: Naming the option, the value given and the choices.
    """
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ConfigurationError(f"{name} must be one of {listed}; got {value!r}")


#: What a read's bands hold: the stored values, float32 with NaN for nodata
#: (``masked``), or physical values, scaled and offset, with NaN for nodata.
Values = Literal["stored", "masked", "scaled"]
VALUES: tuple[Values, ...] = get_args(Values)

#: A CRS as users give it: a pyproj CRS, ``"EPSG:32633"``, or an EPSG code.
CRSLike = CRS | str | int

#: A pixel size in CRS units: one number for square pixels, or ``(x, y)``.
Resolution = float | tuple[float, float]


@dataclass(frozen=True)
class ReadOptions:
    """How stored tiles become pixels: one value for every read of rasteret.

    ``get_numpy``, ``get_xarray``, ``get_gdf``, ``sample_points``,
    ``to_torchgeo_dataset``, ``export_chips`` and the datamodule all take these
    options, as ``options=ReadOptions(...)`` or as keywords of the same names. A
    keyword overrides the field of ``options`` when it differs from its default, so
    one value can be shared and a call can still change one field.

    The names are one per concept across the entry points. ``resolution`` is
    TorchGeo's ``res``: the readers all spell it out (as odc-stac and stackstac do),
    and a TorchGeo dataset still has its ``res`` attribute, which TorchGeo's
    samplers read.

    Attributes:
        target_crs: Output CRS (default: the most common CRS of the scenes read).
        resolution: Output pixel size in ``target_crs`` units (default: native).
        resampling: ``"nearest"`` or ``"bilinear"`` where a scene is not on the
            output grid.
        apply_scale: Physical values as float32 with NaN for nodata: each scene's
            own scale/offset from the COG's GDAL metadata, else from its STAC item's
            ``raster:bands``.
        masked: float32 with NaN where a pixel is nodata (each scene's own nodata),
            without scaling (as rasterio's and rioxarray's ``masked=True``).
        clip: Set pixels whose centre is outside the read's polygon to nodata (reads
            of a geometry; a dataset sample and a point have no polygon to clip to).
        date_range: Only scenes within ``(start, end)``, inclusive.
        on_error: ``"raise"`` (default), or ``"skip"``: scenes or tiles that fail to
            read (after retries, or replaced since the build) are left out with a
            warning naming them.
        validate: Check that every tile comes from the version of its object the
            collection recorded (``If-Match`` on the requests, size and ETag on the
            responses), so a replaced object raises instead of giving wrong pixels.
    """

    target_crs: CRSLike | None = None
    resolution: Resolution | None = None
    resampling: Resampling = "nearest"
    apply_scale: bool = False
    masked: bool = False
    clip: bool = True
    date_range: DateRange | None = None
    on_error: OnError = "raise"
    validate: bool = True

    def __post_init__(self) -> None:
        check_option("resampling", self.resampling, RESAMPLING)
        check_option("on_error", self.on_error, ON_ERROR)
        check_resolution(self.resolution)
        parse_date_range(self.date_range)
        if self.target_crs is not None:
            try:
                CRS.from_user_input(self.target_crs)
            except Exception as exc:  # pyproj raises CRSError, a bare Exception subclass
                raise ConfigurationError(
                    f"target_crs={self.target_crs!r} is not a CRS pyproj knows "
                    "(give e.g. 'EPSG:32633' or 32633)") from exc

    @property
    def values(self) -> Values:
        """What the bands hold: ``"scaled"``, ``"masked"`` or ``"stored"``."""
        return "scaled" if self.apply_scale else "masked" if self.masked else "stored"

    def given(self) -> dict[str, Any]:
        """The fields that differ from their defaults, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != f.default}

    def merged(self, **keywords: Any) -> ReadOptions:
        """These options with each keyword that differs from its default applied.

        Raises:
            ConfigurationError: A keyword that is not a read option, or a bad value.
        """
        unknown = sorted(set(keywords) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigurationError(f"not read options: {unknown}; see ReadOptions")
        defaults = {f.name: f.default for f in fields(self)}
        changed = {k: v for k, v in keywords.items() if v != defaults[k]}
        return replace(self, **changed) if changed else self

    def refuse(self, where: str, names: Collection[str]) -> None:
        """Refuse the options ``names`` set away from their defaults, which ``where``
        cannot apply (e.g. ``target_crs`` for points sampled in each scene's grid).

        Raises:
            ConfigurationError: Naming the options and ``where``.
        """
        set_here = sorted(set(self.given()) & set(names))
        if set_here:
            raise ConfigurationError(f"{where} does not apply {set_here}: leave them unset")


def read_options(options: ReadOptions | None, **keywords: Any) -> ReadOptions:
    """``options`` (default: all defaults) with the keywords of a call applied (see
    :meth:`ReadOptions.merged`)."""
    return (options or ReadOptions()).merged(**keywords)


def check_resolution(resolution: Any) -> None:
    """Refuse a resolution that is not one positive number or a pair of them.

    Raises:
        ConfigurationError: Naming the value.
    """
    if resolution is None:
        return
    pair = resolution if isinstance(resolution, (tuple, list)) else (resolution,)
    if (len(pair) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                       or not v > 0 for v in pair)):
        raise ConfigurationError(
            f"resolution={resolution!r}: give one positive pixel size or (x, y) sizes")


#: What a build records of each scene's valid data (see :mod:`rasteret.coverage`):
#: ``"geometry"`` (the item's geometry and sparse tiles, no request) or
#: ``"overview"`` (also one read of each asset's smallest overview); None: nothing.
ValidCoverage = Literal["geometry", "overview"]
VALID_COVERAGE: tuple[ValidCoverage, ...] = get_args(ValidCoverage)
