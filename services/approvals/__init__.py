"""Approval service: keeps pending approvals durably, lets reviewers decide them (web page, API, CLI), publishes
each decision once."""

SERVICE = "approvals"
