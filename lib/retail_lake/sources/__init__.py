"""One package per data source: everything between its landing files and its silver tables.

Each holds `tables.py` (its bronze and silver contracts and the table names they share) and
`cleanse.py` (its rules and its `CLEANSERS`); a source with its own file format holds the
reader too (`fashion_mnist/idx.py`). `retail_lake.registry` lists them.

    rossmann        Rossmann store sales, plans and store attributes (CSV)
    online_retail   UCI Online Retail invoice lines (CSV)
    geography       GeoNames places and countries, a store directory (CSV)
    fashion_mnist   Fashion-MNIST product images (IDX)
"""
