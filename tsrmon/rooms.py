"""What a room of the service tree can offer the house: room interfaces.

A room (a child service of ``TsrmonService``) declares with
``@implementer`` which of these it provides, as Twisted's own services do.
The top service finds ``/healthz`` checks, ``/metrics`` counters and the
SIGHUP ``reconfigure`` targets by walking the service tree for these
declarations (:func:`providers`), so there is one registry, the tree, and
a room that declares an interface without the methods fails start-up
(:func:`problems`, via ``zope.interface.verify.verifyObject``).

Plain objects that must take SIGHUP too (the HTTP policy, the sensor
catalog, the REST routes) sit in the tree inside a :class:`Part`.
"""

from collections.abc import Mapping

from twisted.application import service
from zope.interface import Attribute, Interface, implementer, providedBy
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject


class IHealth(Interface):
    """A room with a ``/healthz`` check."""

    health_key = Attribute("Its name under /healthz ``checks`` (e.g. 'database').")

    def health():
        """A JSON-ready dict whose ``ok`` says whether the room can do its job."""


class ICounters(Interface):
    """A room with flat counters for ``/metrics``."""

    counters_key = Attribute("Its name in /metrics (``tsrmon_<key>_...``, e.g. 'ingest').")

    def counters():
        """A dict of name -> number."""


class IReconfigurable(Interface):
    """A room that takes a new configuration on SIGHUP."""

    def reconfigure(config):
        """Apply ``config`` (a validated ``Config``) to new work; must not block."""


ROOM_INTERFACES = (IHealth, ICounters, IReconfigurable)


@implementer(IReconfigurable)
class Part(service.Service):
    """Holds a plain (non-service) object in the tree so SIGHUP reaches it."""

    def __init__(self, name, obj):
        self.setName(name)
        self.obj = obj

    def reconfigure(self, config):
        self.obj.reconfigure(config)


def walk(root):
    """Every service under ``root`` (depth first, in start order)."""
    for child in root:
        yield child
        if isinstance(child, service.MultiService):
            yield from walk(child)


def providers(root, interface):
    """The services under ``root`` that declare ``interface``, in start order."""
    return [child for child in walk(root) if interface.providedBy(child)]


def problems(root):
    """One line per room whose declarations do not hold (empty when all do):
    a declared interface without its methods or attributes, or two rooms
    under one ``/healthz`` / ``/metrics`` key."""
    found = []
    for child in walk(root):
        for interface in ROOM_INTERFACES:
            if interface in providedBy(child):
                try:
                    verifyObject(interface, child)
                except Invalid as e:
                    label = child.name or type(child).__name__
                    found.append(f"{label} declares {interface.__name__} but "
                                 f"{' '.join(str(e).split())}")
    for interface, key in ((IHealth, "health_key"), (ICounters, "counters_key")):
        seen = {}
        for child in providers(root, interface):
            name = getattr(child, key, None)
            if name in seen:
                found.append(f"{seen[name]} and {child.name} both report {interface.__name__} "
                             f"as {name!r}")
            seen.setdefault(name, child.name)
    return found


class Reports(Mapping):
    """``{key: bound method}`` of every room under ``root`` that provides
    ``interface``, read from the tree on each use (the shape ``RestAPI``
    takes for ``health`` and ``counters``)."""

    def __init__(self, root, interface, key, method):
        self.root = root
        self.interface = interface
        self.key = key
        self.method = method

    def _current(self):
        return {getattr(room, self.key): getattr(room, self.method)
                for room in providers(self.root, self.interface)}

    def __getitem__(self, name):
        return self._current()[name]

    def __iter__(self):
        return iter(self._current())

    def __len__(self):
        return len(self._current())

    def items(self):
        return self._current().items()  # one walk, not one per key

    def __bool__(self):
        # A view of a tree that may still be growing: never mistaken for
        # "no checks given" (``health or {}``) while makeService builds it.
        return True


def health_checks(root):
    return Reports(root, IHealth, "health_key", "health")


def counter_readers(root):
    return Reports(root, ICounters, "counters_key", "counters")
