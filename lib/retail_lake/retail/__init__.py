"""Online Retail: invoice lines, returns, customers and products."""
