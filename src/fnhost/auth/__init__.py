"""Identity: token issuing and verification, capabilities, sessions, secrets at rest."""
