"""The PostgreSQL store backend (``DATABASE.BACKEND: postgresql``): one
shared database for every node and machine (``docs/scale-out.md``)."""
