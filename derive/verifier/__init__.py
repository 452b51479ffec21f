"""``derive verify``'s front end: a formula a person typed, read safely and checked against the derivation."""
