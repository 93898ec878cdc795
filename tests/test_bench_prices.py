"""Price table, overrides, published numbers, and the live AWS Pricing API call (stubbed, no network).

moto 5 has no Pricing service, so the API is faked with botocore's Stubber, which checks the
request parameters against the real service model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys

import pytest

from neuron_encoder.bench import prices
from neuron_encoder.bench.prices import (
    ON_DEMAND_USD_PER_HOUR,
    PRICE_SOURCE,
    PUBLISHED,
    PriceTable,
    PriceTableError,
    fetch_live_prices,
    load_prices,
)

# From shared/NEURON.md: on-demand us-east-1 USD/h.
EXPECTED = {
    "inf2.xlarge": 0.7582, "inf2.8xlarge": 1.9679, "inf2.24xlarge": 6.4906, "inf2.48xlarge": 12.9813,
    "trn1.2xlarge": 1.3438, "trn1.32xlarge": 21.50, "g5.xlarge": 1.006, "g6.xlarge": 0.8048,
    "c6i.xlarge": 0.17, "c7i.xlarge": 0.1785,
}


def test_default_table_matches_the_documented_prices():
    table = load_prices(None)
    assert dict(table.prices) == EXPECTED
    assert table.source == PRICE_SOURCE
    assert table.price("inf2.xlarge") == 0.7582
    assert table.price("p5.48xlarge") is None
    assert table.price(None) is None


def test_price_source_states_the_basis():
    for words in ("on-demand", "us-east-1", "Linux", "2026", "reserved", "0.328"):
        assert words in PRICE_SOURCE


def test_inline_override_replaces_some_prices_and_keeps_the_rest():
    table = load_prices("inf2.xlarge=0.76, c6i.xlarge=0.2")
    assert table.price("inf2.xlarge") == 0.76
    assert table.price("c6i.xlarge") == 0.2
    assert table.price("g5.xlarge") == EXPECTED["g5.xlarge"]
    assert table.overridden == ("c6i.xlarge", "inf2.xlarge")
    assert "Overridden" in table.source and "inf2.xlarge" in table.source
    assert ON_DEMAND_USD_PER_HOUR["inf2.xlarge"] == 0.7582  # the built-in table is not modified


def test_json_override_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"inf2.xlarge": 0.5, "m7i.large": 0.1008}))
    table = load_prices(path)
    assert table.price("inf2.xlarge") == 0.5
    assert table.price("m7i.large") == 0.1008
    assert str(path) in table.source


def test_csv_override_file_with_header(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("instance,usd_per_hour\ninf2.xlarge,0.6\n\ng5.xlarge, 1.2\n")
    table = load_prices(str(path))
    assert table.price("inf2.xlarge") == 0.6
    assert table.price("g5.xlarge") == 1.2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inf2.xlarge=-0.5", "must be a positive"),
        ("inf2.xlarge=cheap", "not a number"),
        ("inf2.xlarge=nan", "must be a positive"),
        ("inf2.xlarge=0.7,c6i.xlarge", "'c6i.xlarge' is not INSTANCE=USD_PER_HOUR"),
        ("=0.7", "non-empty name"),
        ("just-some-words", "unknown format"),
        (",", "unknown format"),
    ],
)
def test_bad_inline_overrides(override, message):
    with pytest.raises(PriceTableError, match=message):
        load_prices(override)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.json", '{"inf2.xlarge": -1}', "must be a positive"),
        ("p.json", '{"inf2.xlarge": "abc"}', "not a number"),
        ("p.json", '{"inf2.xlarge": true}', "not a number"),
        ("p.json", "[1, 2]", "expected a JSON object"),
        ("p.json", "{oops", "not JSON"),
        ("p.csv", "inf2.xlarge,0.7,extra\n", "line 1 should be"),
        ("p.csv", "inf2.xlarge,-2\n", "line 1.*must be a positive"),
        ("p.csv", "", "no INSTANCE,USD_PER_HOUR lines"),
        ("p.txt", "inf2.xlarge=0.7", "unknown price file format"),
    ],
)
def test_bad_override_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PriceTableError, match=message) as info:
        load_prices(str(path))
    assert str(path) in str(info.value)


def test_missing_override_file_is_named(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(PriceTableError, match="no such price file"):
        load_prices(path)


def test_price_table_error_is_in_the_package_family():
    from neuron_encoder.errors import InputFileError, NeuronEncoderError
    assert issubclass(PriceTableError, ValueError)
    assert issubclass(PriceTableError, InputFileError) and issubclass(PriceTableError, NeuronEncoderError)
    assert PriceTableError("x").exit_code == 2  # the CLI's exit code for bad input


def test_published_numbers_from_the_neuron_performance_page():
    assert len(PUBLISHED) == 5
    first = PUBLISHED[0]
    assert (first["model"], first["instance"], first["batch"], first["seq"]) == (
        "bert-base-uncased", "inf2.xlarge", 1, 128)
    assert (first["throughput"], first["p50_ms"], first["p99_ms"]) == (1998.0, 1.00, 1.04)
    assert {p["instance"] for p in PUBLISHED} == {"inf2.xlarge", "trn1.2xlarge"}
    assert all(p["seq"] == 128 and p["p50_ms"] <= p["p99_ms"] for p in PUBLISHED)
    for words in ("AWS Neuron performance page", "matmult-bf16", "data parallel", "NeuronPerf"):
        assert words in first["source"]


# The live Pricing API, stubbed.

needs_boto3 = pytest.mark.skipif(importlib.util.find_spec("boto3") is None, reason="boto3 is not installed")


def price_item(instance_type: str, usd: str) -> str:
    """One Price List item as the API returns it: a JSON string."""
    on_demand = {"unit": "Hrs", "pricePerUnit": {"USD": usd}, "description": f"${usd} per On Demand Linux"}
    reserved = {"unit": "Hrs", "pricePerUnit": {"USD": "0.3280000000"}}
    return json.dumps({
        "product": {"attributes": {"instanceType": instance_type, "location": "US East (N. Virginia)"}},
        "terms": {"OnDemand": {"SKU.JRTCKXETXF": {"priceDimensions": {"SKU.JRTCKXETXF.6YS6EN2CT7": on_demand}}},
                  "Reserved": {"SKU.X": {"priceDimensions": {"SKU.X.Y": reserved}}}},
    })


def expected_request(instance_type: str, location_field: str = "location",
                     location: str = "US East (N. Virginia)", **extra) -> dict:
    return {
        "ServiceCode": "AmazonEC2",
        "Filters": [
            {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
            {"Type": "TERM_MATCH", "Field": location_field, "Value": location},
            {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
            {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
            {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
            {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
        ],
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
        **extra,
    }


@pytest.fixture
def pricing_client():
    boto3 = pytest.importorskip("boto3")
    from botocore.stub import Stubber

    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_live_prices_parse_the_on_demand_dimension(pricing_client):
    client, stubber = pricing_client
    for instance_type, usd in (("inf2.xlarge", "0.7582000000"), ("g5.xlarge", "1.0060000000")):
        stubber.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [price_item(instance_type, usd)]},
                             expected_request(instance_type))
    assert fetch_live_prices(["inf2.xlarge", "g5.xlarge", "inf2.xlarge"], client=client) == {
        "inf2.xlarge": 0.7582, "g5.xlarge": 1.006}


def test_live_prices_follow_next_token_and_other_regions(pricing_client):
    client, stubber = pricing_client
    stubber.add_response("get_products", {"PriceList": [], "NextToken": "page-2"},
                         expected_request("inf2.xlarge", location="US West (Oregon)"))
    stubber.add_response("get_products", {"PriceList": [price_item("inf2.xlarge", "0.9100000000")]},
                         expected_request("inf2.xlarge", location="US West (Oregon)", NextToken="page-2"))
    assert fetch_live_prices(["inf2.xlarge"], region="us-west-2", client=client) == {"inf2.xlarge": 0.91}


def test_live_prices_use_region_code_for_unlisted_regions(pricing_client):
    client, stubber = pricing_client
    stubber.add_response("get_products", {"PriceList": [price_item("inf2.xlarge", "0.99")]},
                         expected_request("inf2.xlarge", location_field="regionCode", location="mx-central-1"))
    assert fetch_live_prices(["inf2.xlarge"], region="mx-central-1", client=client) == {"inf2.xlarge": 0.99}


def test_live_prices_skip_unknown_instances(pricing_client, caplog):
    client, stubber = pricing_client
    stubber.add_response("get_products", {"PriceList": []}, expected_request("inf9.tiny"))
    with caplog.at_level(logging.WARNING, logger=prices.__name__):
        assert fetch_live_prices(["inf9.tiny"], client=client) == {}
    assert "no on-demand Linux price for inf9.tiny" in caplog.text


def test_live_prices_give_up_on_api_errors(pricing_client, caplog):
    client, stubber = pricing_client
    stubber.add_client_error("get_products", service_error_code="AccessDeniedException", http_status_code=400)
    with caplog.at_level(logging.WARNING, logger=prices.__name__):
        assert fetch_live_prices(["inf2.xlarge"], client=client) == {}
    assert "AccessDeniedException" in caplog.text


@needs_boto3
def test_live_prices_without_credentials(monkeypatch, tmp_path, caplog):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def no_network(*args, **kwargs):
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setattr("botocore.httpsession.URLLib3Session.send", no_network)
    with caplog.at_level(logging.WARNING, logger=prices.__name__):
        assert fetch_live_prices(["inf2.xlarge"]) == {}
    assert "NoCredentialsError" in caplog.text


def test_live_prices_without_boto3(monkeypatch, caplog):
    for name in ("boto3", "botocore", "botocore.exceptions"):
        monkeypatch.setitem(sys.modules, name, None)
    with caplog.at_level(logging.WARNING, logger=prices.__name__):
        assert fetch_live_prices(["inf2.xlarge"]) == {}
    assert "boto3 is not installed" in caplog.text


def test_live_prices_merge_into_a_table():
    table = load_prices(None).updated({"inf2.xlarge": 0.8}, "AWS Price List API")
    assert isinstance(table, PriceTable)
    assert table.price("inf2.xlarge") == 0.8
    assert "AWS Price List API" in table.source
    assert load_prices(None).updated({}, "nothing") == load_prices(None)
