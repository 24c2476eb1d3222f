"""The REST API's routes, one module per resource, on one Klein app.

``app`` is the API's one URL map.  Each module here holds a class of routes
(methods decorated with ``app.route``) for one resource; they share the
request parsing of :mod:`.params` and the answers of :mod:`.answers`.
:class:`tsrmon.web.rest.RestAPI` inherits them all and holds ``app`` as a
class attribute, so ``self.app`` is a Klein bound to that instance (Klein's
non-global-state pattern): a route reads only its ``RestAPI``'s config,
clock, hub, reader… never module state.  Endpoint names are the method
names, so they are unique across modules.
"""

from klein import Klein

app = Klein()
