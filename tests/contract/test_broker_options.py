"""The one policy for a broker bus URL's query (bus/broker.py; docs/brokers/README.md):
the same cases on every broker, each with its own option names. No broker needed --
``open_bus`` builds the bus without connecting."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from agent_coordinator.bus import open_bus
from agent_coordinator.bus.broker import BrokerBus
from agent_coordinator.bus.nats import JetStreamBus
from agent_coordinator.bus.rabbitmq import RabbitMQBus
from agent_coordinator.core.errors import BusError

PASSWORD = "s3cret-pw"


@dataclass(frozen=True)
class Broker:
    name: str
    url: str  # with a user and PASSWORD, no query
    bus_class: type[BrokerBus]
    integer: str  # an int option
    number: str  # a float option
    name_option: str  # a str option of the bus


BROKERS = [
    Broker(
        "rabbitmq",
        f"amqp://agent:{PASSWORD}@127.0.0.1:5672/",
        RabbitMQBus,
        "max_deliveries",
        "redelivery_delay",
        "exchange",
    ),
    Broker("nats", f"nats://agent:{PASSWORD}@127.0.0.1:4222", JetStreamBus, "max_deliveries", "ack_wait", "stream"),
]


@pytest.fixture(params=BROKERS, ids=lambda b: b.name)
def broker(request: pytest.FixtureRequest) -> Broker:
    chosen: Broker = request.param
    return chosen


def refusal(url: str) -> str:
    with pytest.raises(BusError) as raised:
        open_bus(url)
    return str(raised.value)


def test_an_unknown_query_key_is_refused_naming_it_and_the_accepted_ones(broker: Broker) -> None:
    message = refusal(f"{broker.url}?max_delivery=3")  # misspelt: must not be ignored
    assert "'max_delivery'" in message
    accepted = message.split("may set: ", 1)[1].split(", ")
    assert set(broker.bus_class.url_options) <= set(accepted)
    assert set(broker.bus_class.client_url_options) <= set(accepted)
    assert PASSWORD not in message


@pytest.mark.parametrize("kind", ["integer", "number"])
def test_a_value_of_the_wrong_type_is_refused_naming_the_option(broker: Broker, kind: str) -> None:
    option = getattr(broker, kind)
    message = refusal(f"{broker.url}?{option}=lots")
    assert re.search(rf"\b{option}='lots' is not an? {kind}", message), message
    assert PASSWORD not in message


def test_a_value_out_of_range_is_refused_naming_the_option(broker: Broker) -> None:
    message = refusal(f"{broker.url}?max_deliveries=0")
    assert "max_deliveries must be at least 1" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("query", ["max_deliveries={p}", "{p}=1", "max_deliveries=x{p}x"])
def test_the_password_is_never_in_a_message_even_when_the_query_repeats_it(broker: Broker, query: str) -> None:
    message = refusal(f"{broker.url}?{query.format(p=PASSWORD)}")
    assert PASSWORD not in message
    assert "***" in message


def test_the_bus_options_are_taken_from_the_url_and_keywords_win(broker: Broker) -> None:
    bus: Any = open_bus(f"{broker.url}?{broker.integer}=7&{broker.name_option}=FromUrl", **{broker.integer: 9})
    assert isinstance(bus, broker.bus_class)
    assert getattr(bus, broker.integer) == 9
    assert getattr(bus, broker.name_option) == "FromUrl"
    assert "?" not in bus.url  # the bus's own options are not passed on to the client


def test_rabbitmq_passes_aio_pikas_options_on_checked() -> None:
    bus: Any = open_bus("amqp://guest:guest@127.0.0.1:5672/?heartbeat=15&exchange=shop&reconnect_interval=1")
    assert bus.exchange == "shop"
    assert bus.url == "amqp://guest:guest@127.0.0.1:5672/?heartbeat=15&reconnect_interval=1"
    assert "heartbeat='often' is not an integer" in refusal("amqp://guest:guest@127.0.0.1:5672/?heartbeat=often")
    # aiormq verifies certificates only for exactly "0": "false" would turn verification off.
    assert "no_verify_ssl='false' is not one of 0, 1" in refusal("amqps://guest:guest@127.0.0.1/?no_verify_ssl=false")


def test_nats_takes_no_client_options_in_the_query() -> None:
    message = refusal("nats://127.0.0.1:4222?name=worker")
    assert "unknown NATS JetStream bus URL option 'name'" in message
