"""Instance prices (USD per hour) for cost per inference, and AWS's published numbers to compare with.

Every cost we print names its price basis: AWS's own performance pages price at reserved-instance
rates, which makes their cost per inference look several times lower than on-demand.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuron_encoder.errors import InputFileError
from neuron_encoder.files import parse_json, read_text_file

logger = logging.getLogger(__name__)

PRICE_SOURCE = (
    "on-demand, us-east-1, Linux, USD per hour, as published by AWS (EC2 on-demand pricing), "
    "recorded in 2026; verify before quoting. AWS's Neuron performance pages use reserved-instance "
    "rates instead (e.g. inf2.xlarge 0.328 USD/h), so their cost per inference is lower than ours."
)

ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "inf2.xlarge": 0.7582,
    "inf2.8xlarge": 1.9679,
    "inf2.24xlarge": 6.4906,
    "inf2.48xlarge": 12.9813,
    "trn1.2xlarge": 1.3438,
    "trn1.32xlarge": 21.50,
    "g5.xlarge": 1.006,
    "g6.xlarge": 0.8048,
    "c6i.xlarge": 0.17,
    "c7i.xlarge": 0.1785,
}

PUBLISHED_SOURCE = (
    "AWS Neuron performance page (Inf2/Trn1), matmult-bf16 auto-cast, data parallel, NeuronPerf; "
    "fp32 model, seq 128, latency per call (per batch), throughput summed over both NeuronCores"
)

PUBLISHED: list[dict[str, Any]] = [
    {"model": model, "instance": instance, "batch": batch, "seq": 128, "throughput": throughput,
     "p50_ms": p50, "p99_ms": p99, "source": PUBLISHED_SOURCE}
    for model, instance, batch, throughput, p50, p99 in [
        ("bert-base-uncased", "inf2.xlarge", 1, 1998.0, 1.00, 1.04),
        ("bert-base-uncased", "inf2.xlarge", 8, 2674.0, 5.97, 6.17),
        ("distilbert-base-uncased", "inf2.xlarge", 16, 5308.0, 6.01, 6.23),
        ("bert-large-uncased", "inf2.xlarge", 4, 950.0, 8.41, 8.85),
        ("bert-base-uncased", "trn1.2xlarge", 16, 3422.0, 9.34, 9.42),
    ]
]

# The Pricing API filters on the region's long name; newer regions fall back to regionCode.
REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "ca-central-1": "Canada (Central)",
    "eu-central-1": "EU (Frankfurt)",
    "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)",
    "eu-west-3": "EU (Paris)",
    "eu-north-1": "EU (Stockholm)",
    "ap-south-1": "Asia Pacific (Mumbai)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-northeast-2": "Asia Pacific (Seoul)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "sa-east-1": "South America (Sao Paulo)",
}


class PriceTableError(InputFileError):
    """A price override that cannot be read; the message names the entry or file."""


@dataclass(frozen=True)
class PriceTable:
    """USD per hour by instance type, with the basis every cost printed from it must state."""

    prices: Mapping[str, float]
    source: str = PRICE_SOURCE
    overridden: tuple[str, ...] = field(default=())  # instance types whose price came from elsewhere

    def price(self, instance_type: str | None) -> float | None:
        """Hourly price, or None for an unknown or missing instance type (then no cost is shown)."""
        if instance_type is None:
            return None
        return self.prices.get(instance_type)

    def updated(self, prices: Mapping[str, float], source: str) -> PriceTable:
        """A copy with some prices replaced (an override file, live prices), noting where from."""
        if not prices:
            return self
        checked = {name: _check_price(name, value, source) for name, value in prices.items()}
        names = ", ".join(sorted(checked))
        return PriceTable(
            prices={**self.prices, **checked},
            source=f"{self.source} Overridden from {source}: {names}.",
            overridden=tuple(sorted(set(self.overridden) | set(checked))),
        )


def _check_price(name: Any, value: Any, where: str) -> float:
    if not isinstance(name, str) or not name.strip():
        raise PriceTableError(f"{where}: instance type must be a non-empty name, got {name!r}")
    if isinstance(value, bool):
        raise PriceTableError(f"{where}: price for {name} is not a number: {value!r}")
    try:
        price = float(value)
    except (TypeError, ValueError):
        raise PriceTableError(f"{where}: price for {name} is not a number: {value!r}") from None
    if not math.isfinite(price) or price <= 0:
        raise PriceTableError(f"{where}: price for {name} must be a positive USD/h amount, got {value!r}")
    return price


def _parse_inline(text: str) -> dict[str, float]:
    prices: dict[str, float] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, value = entry.partition("=")
        if not sep:
            raise PriceTableError(f"price override {text!r}: entry {entry!r} is not INSTANCE=USD_PER_HOUR")
        prices[name.strip()] = _check_price(name.strip(), value.strip(), f"price override {text!r}")
    if not prices:
        raise PriceTableError(f"price override {text!r} has no INSTANCE=USD_PER_HOUR entries")
    return prices


def _parse_json(path: Path, text: str) -> dict[str, float]:
    data = parse_json(text, path, PriceTableError)
    if not isinstance(data, dict):
        raise PriceTableError(f"{path}: expected a JSON object {{instance: USD_per_hour}}, got {type(data).__name__}")
    return {name: _check_price(name, value, str(path)) for name, value in data.items()}


def _parse_csv(path: Path, text: str) -> dict[str, float]:
    prices: dict[str, float] = {}
    for line_no, record in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != 2:
            raise PriceTableError(f"{path}: line {line_no} should be INSTANCE,USD_PER_HOUR, got {record!r}")
        name, value = record[0].strip(), record[1].strip()
        if line_no == 1 and name.lower() in ("instance", "instance_type"):
            continue
        prices[name] = _check_price(name, value, f"{path}: line {line_no}")
    if not prices:
        raise PriceTableError(f"{path}: no INSTANCE,USD_PER_HOUR lines")
    return prices


def load_prices(override: str | Path | None = None) -> PriceTable:
    """The built-in on-demand table, with prices from a JSON/CSV file or "a=0.7,b=0.17" on top.

    A JSON file holds {instance: price}; a CSV file holds instance,price lines (an
    "instance,..." header is allowed). Instances not in the override keep the built-in price.
    """
    table = PriceTable(prices=dict(ON_DEMAND_USD_PER_HOUR))
    if override is None:
        return table
    path = Path(override)
    suffix = path.suffix.lower()
    is_file_name = isinstance(override, Path) or suffix in (".json", ".csv")
    if isinstance(override, str) and "=" in override and not is_file_name:
        return table.updated(_parse_inline(override), f"override {override!r}")
    if not is_file_name and not path.is_file():
        raise PriceTableError(
            f"price override {str(override)!r}: unknown format; give a .json or .csv file "
            "or INSTANCE=USD_PER_HOUR[,INSTANCE=USD_PER_HOUR...]"
        )
    text = read_text_file(path, "price file", PriceTableError)
    if suffix == ".json":
        prices = _parse_json(path, text)
    elif suffix == ".csv":
        prices = _parse_csv(path, text)
    else:
        raise PriceTableError(f"{path}: unknown price file format {suffix or '(no suffix)'!r}; use .json or .csv")
    return table.updated(prices, str(path))


def _product_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    location = REGION_NAMES.get(region)
    where = {"Field": "location", "Value": location} if location else {"Field": "regionCode", "Value": region}
    terms = [
        {"Field": "instanceType", "Value": instance_type},
        where,
        {"Field": "operatingSystem", "Value": "Linux"},
        {"Field": "tenancy", "Value": "Shared"},
        {"Field": "preInstalledSw", "Value": "NA"},
        {"Field": "capacitystatus", "Value": "Used"},
    ]
    return [{"Type": "TERM_MATCH", **term} for term in terms]


def _on_demand_hourly(price_item: str | Mapping[str, Any]) -> list[float]:
    """USD/h prices in one Price List item's OnDemand terms (the API returns items as JSON text)."""
    item = json.loads(price_item) if isinstance(price_item, str) else price_item
    found = []
    for term in item.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if usd is None:
                continue
            value = float(usd)
            if value > 0:
                found.append(value)
    return found


def fetch_live_prices(
    instance_types: Iterable[str], region: str = "us-east-1", client: Any = None
) -> dict[str, float]:
    """On-demand Linux USD/h from the AWS Price List API; {} (with a logged reason) when unavailable.

    Needs boto3 and credentials allowed to call pricing:GetProducts. The Pricing API lives in
    us-east-1 whatever region is priced. Pass `client` to reuse or stub a pricing client.
    Instance types the API does not know are left out and logged.
    """
    instance_types = list(dict.fromkeys(instance_types))
    if not instance_types:
        return {}
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        logger.warning("live prices skipped: boto3 is not installed (pip install boto3)")
        return {}
    if client is None:
        try:
            import boto3
        except ImportError:
            logger.warning("live prices skipped: boto3 is not installed (pip install boto3)")
            return {}
        client = boto3.client("pricing", region_name="us-east-1")

    prices: dict[str, float] = {}
    for instance_type in instance_types:
        found: list[float] = []
        token = None
        try:
            while True:
                kwargs: dict[str, Any] = {
                    "ServiceCode": "AmazonEC2",
                    "Filters": _product_filters(instance_type, region),
                    "FormatVersion": "aws_v1",
                    "MaxResults": 100,
                }
                if token:
                    kwargs["NextToken"] = token
                response = client.get_products(**kwargs)
                for item in response.get("PriceList", []):
                    found.extend(_on_demand_hourly(item))
                token = response.get("NextToken")
                if not token:
                    break
        except (BotoCoreError, ClientError) as exc:
            # No credentials, no network, access denied: none is worth failing a report over.
            logger.warning("live prices skipped: AWS Pricing API failed (%s: %s)", type(exc).__name__, exc)
            return {}
        except (ValueError, TypeError, AttributeError) as exc:
            logger.warning("live price for %s skipped: unexpected Price List item (%s)", instance_type, exc)
            continue
        if not found:
            logger.warning("no on-demand Linux price for %s in %s from the Pricing API", instance_type, region)
            continue
        if len(set(found)) > 1:
            logger.warning("several on-demand prices for %s in %s: %s; using the lowest",
                           instance_type, region, sorted(set(found)))
        prices[instance_type] = min(found)
    return prices
