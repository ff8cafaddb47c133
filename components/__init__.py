"""devprod's infrastructure library: typed config and one module per component."""
