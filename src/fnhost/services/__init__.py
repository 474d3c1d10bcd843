"""Domain services: rules and state machines, one module per resource. No HTTP here."""
