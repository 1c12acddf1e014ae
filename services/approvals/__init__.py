"""The approval service: humans decide the exact actions the policy guard holds for approval."""
