"""Big inputs by reference: a 32 MiB bytes argument sent through the store, read inside Ray: see README.md."""
