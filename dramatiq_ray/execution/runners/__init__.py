"""How a message's body is run: each runner its own module behind one interface."""
