"""The four built-in families; importing one registers its columns (see `indicators.catalog`)."""
