"""Rossmann: daily store sales, planned days and store attributes into silver."""
