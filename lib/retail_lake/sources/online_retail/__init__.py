"""Online Retail (UCI): invoice lines into transactions, returns, customers and products."""
