"""Persona sets and Bayesian labelling of branches. Never imports textual or rich."""
