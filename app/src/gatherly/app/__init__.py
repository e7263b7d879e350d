"""The gatherly command, the all-in-one composition, the dev gateway and demo data."""
