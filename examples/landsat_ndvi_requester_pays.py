"""Landsat red and NIR for an area, from the requester-pays USGS bucket.

Needs AWS credentials (you pay for the transfer): AWS_PROFILE, AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, or ~/.aws. Reads go to s3://usgs-landsat in us-west-2 with
``x-amz-request-payer: requester``; the catalog's CloudConfig for
``earthsearch/landsat-c2-l2`` sets that up, including the landsatlook-to-S3 rewrite.

    .venv/bin/python examples/landsat_ndvi_requester_pays.py \
        --bbox -105.30,39.95,-105.20,40.05 --dates 2023-06-01/2023-08-31
"""

from __future__ import annotations

import argparse

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bbox", default="-105.30,39.95,-105.20,40.05",
                        help="minx,miny,maxx,maxy in degrees")
    parser.add_argument("--dates", default="2023-06-01/2023-08-31", help="START/END")
    parser.add_argument("--name", default="landsat-ndvi-example")
    parser.add_argument("--max-cloud", type=float, default=20.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from obstore.auth.boto3 import Boto3CredentialProvider

    import rasteret

    bbox = tuple(float(v) for v in args.bbox.split(","))
    start, end = args.dates.split("/")
    backend = rasteret.create_backend(
        credential_provider=Boto3CredentialProvider(), region="us-west-2",
        default_s3_config={"request_payer": True},
    )
    collection = rasteret.build(
        "earthsearch/landsat-c2-l2", name=args.name, bbox=bbox, date_range=(start, end),
        bands=["B4", "B5"], query={"eo:cloud_cover": {"lt": args.max_cloud}},
        backend=backend,
    )
    print(collection)
    ds = collection.get_xarray(bbox, ["B4", "B5"], backend=backend, apply_scale=True)
    ndvi = (ds.B5 - ds.B4) / (ds.B5 + ds.B4)
    for when, value in zip(ds.time.values, ndvi.mean(("y", "x")).values):
        print(f"{np.datetime_as_string(when, unit='D')}  mean NDVI {value:.3f}")


if __name__ == "__main__":
    main()
