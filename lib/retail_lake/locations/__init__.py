"""Store-location scoring: Huff demand capture on real geography."""
