"""Policy as code for the guard: Cedar decisions on tool calls, the signed single-use grants tools require, spend
limits, PII redaction and the query tools' table allow-list (sanitize), prompt-injection screening (injection)."""
