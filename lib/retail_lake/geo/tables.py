"""Table contracts of this domain (bronze and silver)."""

from __future__ import annotations

from retail_lake.contracts import TableContract

BRONZE: list[TableContract] = []
SILVER: list[TableContract] = []
