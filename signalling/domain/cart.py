"""A viewer's cart: product lines and quantities, bounded so one viewer cannot grow it.

The cart is advisory (it is what the viewer intends to buy); stock is only taken by an
order. It lives in memory with the viewer's session; the service turns it into
``cart.updated`` messages via ``lines()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from signalling.domain.catalog import is_valid_id

MAX_LINES = 20
MAX_QUANTITY = 10


class CartError(ValueError):
    """A cart edit that breaks a rule; ``code`` is stable for the ``error`` message."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CartLine:
    product_id: str
    quantity: int


class Cart:
    def __init__(self, max_lines: int = MAX_LINES, max_quantity: int = MAX_QUANTITY) -> None:
        self.max_lines = max_lines
        self.max_quantity = max_quantity
        # dict keeps insertion order, which is the order lines are shown in.
        self._lines: dict[str, int] = {}

    def add(self, product_id: str, quantity: int) -> None:
        """Add ``quantity`` of a product; all-or-nothing when a limit would be exceeded."""
        self._check(product_id, quantity)
        current = self._lines.get(product_id, 0)
        if current == 0 and len(self._lines) >= self.max_lines:
            raise CartError("cart_full", f"a cart holds at most {self.max_lines} products")
        if current + quantity > self.max_quantity:
            raise CartError(
                "quantity_limit", f"at most {self.max_quantity} of one product per cart"
            )
        self._lines[product_id] = current + quantity

    def remove(self, product_id: str, quantity: int) -> None:
        """Remove up to ``quantity``; removing more than is there empties the line."""
        self._check(product_id, quantity)
        current = self._lines.get(product_id, 0)
        if current == 0:
            raise CartError("not_in_cart", f"{product_id} is not in the cart")
        if quantity >= current:
            del self._lines[product_id]
        else:
            self._lines[product_id] = current - quantity

    def clear(self) -> None:
        self._lines.clear()

    def quantity(self, product_id: str) -> int:
        return self._lines.get(product_id, 0)

    def lines(self) -> tuple[CartLine, ...]:
        return tuple(CartLine(p, q) for p, q in self._lines.items())

    def __len__(self) -> int:
        return len(self._lines)

    @staticmethod
    def _check(product_id: str, quantity: int) -> None:
        if not is_valid_id(product_id):
            raise CartError("invalid", "bad product id")
        if type(quantity) is not int or quantity < 1:
            raise CartError("invalid", "quantity must be a positive integer")
