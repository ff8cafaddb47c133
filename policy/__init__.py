"""devprod's security rules as pure predicates, shared by the policy pack, `devprod plan` and tests."""
