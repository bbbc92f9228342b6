"""What the sandbox services know and how they misbehave: the :class:`Scenario`.

A scenario is data (loadable from JSON), so a benchmark or a test states its world
up front: the catalogue and stock, which cards are declined, which countries cannot
be shipped to, and which faults are injected. Every fault decision is a pure
function of the scenario and the request's identity (service, idempotency key,
attempt number), never of timing or a random draw, so a run is reproducible no
matter how its requests interleave.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_coordinator.core.errors import InvalidInput

__all__ = ["MAX_AMOUNT_CENTS", "CatalogueItem", "Scenario", "default_catalogue"]

#: Most cents a unit price, and one reservation's or charge's total, may be: the
#: services refuse more, so every amount they store fits in 64 bits.
MAX_AMOUNT_CENTS = 10**12


class CatalogueItem(BaseModel):
    """One SKU the inventory service sells: display name, unit price (in cents of the
    scenario's ``currency``), initial stock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    unit_price_cents: int = Field(ge=0, le=MAX_AMOUNT_CENTS)
    stock: int = Field(ge=0)


def default_catalogue() -> dict[str, CatalogueItem]:
    """Six SKUs: five with 100 units each, and ``SKU-SOLDOUT`` with none."""
    return {
        "SKU-APPLE": CatalogueItem(name="Apple", unit_price_cents=120, stock=100),
        "SKU-PEAR": CatalogueItem(name="Pear", unit_price_cents=150, stock=100),
        "SKU-KIWI": CatalogueItem(name="Kiwi", unit_price_cents=90, stock=100),
        "SKU-MANGO": CatalogueItem(name="Mango", unit_price_cents=350, stock=100),
        "SKU-FIG": CatalogueItem(name="Fig", unit_price_cents=275, stock=100),
        "SKU-SOLDOUT": CatalogueItem(name="Dragon fruit", unit_price_cents=600, stock=0),
    }


class Scenario(BaseModel):
    """The sandbox's world and its injected faults.

    * ``catalogue`` -- SKU -> :class:`CatalogueItem` (price, initial stock); defaults
      to :func:`default_catalogue`;
    * ``currency`` -- the ISO 4217 code the catalogue's prices are in (``EUR``); the
      inventory service prices reservations in it and refuses any other;
    * ``declined_cards`` -- payment methods the payment service declines (a business
      refusal);
    * ``unshippable_countries`` -- ISO country codes the shipping service refuses;
    * ``flaky_cards`` -- payment method -> N: the payment service answers 503 to the
      first N attempts of each idempotency key charging that card, then succeeds;
    * ``transient_rate`` / ``seed`` -- every service answers 503 to an attempt when
      the hash of (seed, service, idempotency key, attempt number) falls below the
      rate (see :meth:`transient_fault`);
    * ``latency_ms`` -- each request waits this long before being answered.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    catalogue: dict[str, CatalogueItem] = Field(default_factory=default_catalogue)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    declined_cards: frozenset[str] = frozenset({"tok_declined"})
    unshippable_countries: frozenset[str] = frozenset({"AQ"})
    flaky_cards: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: {"tok_flaky": 2})
    transient_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0
    latency_ms: float = Field(default=0.0, ge=0.0)

    @classmethod
    def default(cls) -> Scenario:
        """The default world: :func:`default_catalogue`, one declined card
        (``tok_declined``), one flaky card (``tok_flaky``, 2 failures), Antarctica
        unshippable, no random faults, no latency."""
        return cls()

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Load a scenario from a JSON file (fields as in this class; omitted fields
        take their defaults).

        Raises :class:`~agent_coordinator.core.errors.InvalidInput` naming the file and each
        offending field when the file cannot be read or does not describe a scenario.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read scenario file {str(path)!r}: {exc.strerror or exc}") from exc
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            errors = [(".".join(str(p) for p in e["loc"]) or "<root>", e["msg"]) for e in exc.errors()]
            detail = "; ".join(f"{loc}: {msg}" for loc, msg in errors)
            raise InvalidInput(f"invalid scenario file {str(path)!r}: {detail}", errors=errors) from exc

    def transient_fault(self, service: str, key: str, attempt: int) -> bool:
        """Whether ``service`` answers attempt ``attempt`` of ``key`` with a 503.

        A hash, not a random draw: the same scenario always faults the same
        attempts, however concurrent requests are scheduled.
        """
        if self.transient_rate <= 0.0:
            return False
        digest = hashlib.blake2b(f"{self.seed}|{service}|{key}|{attempt}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.transient_rate
