"""Running calls: executors behind one interface, and the bootstrap inside a function's environment."""

from pathlib import Path

# the script a function's interpreter runs (it imports nothing of fnhost's), and the protocol
# definitions it loads from beside it; a sandbox sees both under /fnhost
BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
PROTOCOL = Path(__file__).with_name("protocol.py")
