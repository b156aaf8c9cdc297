"""Geography: populated places (demand) and existing store locations."""
