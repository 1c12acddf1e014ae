"""`python -m invoice_tools seed`: create the example's database afresh (and forget earlier payments)."""

from __future__ import annotations

import sys

from invoice_tools.store import INVOICES, PURCHASE_ORDERS, seed


def main(argv: list[str]) -> int:
    """Run the one command this package has."""
    if argv != ["seed"]:
        print("usage: python -m invoice_tools seed", file=sys.stderr)
        return 2
    path = seed()
    print(f"seeded {path}: {len(INVOICES)} invoices, {len(PURCHASE_ORDERS)} purchase orders")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
