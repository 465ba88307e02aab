"""Helpers shared by the tests (no tests here): fixtures, fakes, builders, runners."""
