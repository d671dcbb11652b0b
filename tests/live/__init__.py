"""Tests of the live source, and a stand-in for Databento's live gateway (``gateway.py``)."""
