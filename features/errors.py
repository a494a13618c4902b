"""Errors a user can act on: the CLI prints their message as one line, without a traceback."""

from __future__ import annotations


class LeadvalError(Exception):
    """Base of every error whose message is meant for the person running leadval."""


class DatabaseUnavailable(LeadvalError):
    """The CRM database cannot be reached or opened."""


class InvalidInput(LeadvalError):
    """Input data or a setting failed validation; the message names the field, rows and expectation."""
