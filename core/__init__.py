"""Shared foundations: settings, logging, errors."""
