"""HTTP: the Klein REST API, CORS, auth, OpenAPI, /healthz and /metrics."""
