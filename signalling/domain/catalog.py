"""Products: the immutable catalogue entry a host sells, and the rules for a valid one.

A product belongs to one room. Its stock lives in the store (it changes with every order);
``initial_stock`` is only what the store starts from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# Identifiers end up in SQL rows, Redis key names and JSON; keep them short and printable.
ID_RE: Final = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
MAX_NAME: Final = 200
MAX_URL: Final = 2048
MAX_PRICE_CENTS: Final = 10_000_000_000
MAX_STOCK: Final = 10_000_000


class CatalogError(ValueError):
    """A product (or an identifier) that breaks the catalogue rules."""


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def check_id(value: object, what: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise ``CatalogError``."""
    if not is_valid_id(value):
        raise CatalogError(f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True)
class Product:
    """One sellable item. Prices are integer minor units (cents) so money never rounds."""

    id: str
    room: str
    name: str
    price_cents: int
    currency: str
    image_url: str
    initial_stock: int

    def __post_init__(self) -> None:
        validate_product(self)


def validate_product(p: Product) -> None:
    """Raise ``CatalogError`` naming the first broken rule."""
    check_id(p.id, "product id")
    check_id(p.room, "room")
    if not isinstance(p.name, str) or not 1 <= len(p.name) <= MAX_NAME:
        raise CatalogError(f"name must be 1-{MAX_NAME} characters")
    if type(p.price_cents) is not int or not 0 <= p.price_cents <= MAX_PRICE_CENTS:
        raise CatalogError(f"price_cents must be an integer in 0..{MAX_PRICE_CENTS}")
    if not isinstance(p.currency, str) or CURRENCY_RE.fullmatch(p.currency) is None:
        raise CatalogError("currency must be an ISO 4217 code such as EUR")
    if not isinstance(p.image_url, str) or len(p.image_url) > MAX_URL:
        raise CatalogError(f"image_url must be a string of at most {MAX_URL} characters")
    # Only web URLs: the card is rendered by browsers, and javascript:/data: URLs are a
    # classic injection path.
    if p.image_url and not p.image_url.startswith(("https://", "http://")):
        raise CatalogError("image_url must be empty or an http(s) URL")
    if type(p.initial_stock) is not int or not 0 <= p.initial_stock <= MAX_STOCK:
        raise CatalogError(f"initial_stock must be an integer in 0..{MAX_STOCK}")
