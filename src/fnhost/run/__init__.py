"""Running calls: executors behind one interface, and the bootstrap inside a function's environment."""
