"""retail-lake: PySpark + Delta Lake retail analytics."""

__version__ = "0.1.0"
