"""What flows in: stock codes, the parquet input contract (reading and cleaning), bars on the calendar."""
