"""The approval service: humans decide the exact actions the policy guard holds for approval (durably kept,
decided on a web page, an API or `baton approvals`, each decision published once)."""

SERVICE = "approvals"
