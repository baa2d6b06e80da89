"""Test helpers shipped with xrayflow (nothing here is used by the pipeline itself)."""
