"""Live layer: Engine.IO v4 / Socket.IO v5 on Autobahn and twisted.web."""
