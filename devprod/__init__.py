"""devprod operator tooling: offline plan, roster editing, and production operations."""
