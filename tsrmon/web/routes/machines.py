"""The machine routes: ``/sio/machineList`` (connected machines, as the
deployed server served them) and ``/machines`` (every known machine's
status, sensors with their metadata, frames per second)."""

from tsrmon.web.routes import app
from tsrmon.web.routes.answers import Answers
from tsrmon.web.routes.params import Params


class MachineRoutes(Answers, Params):
    @app.route("/sio/machineList", methods=["GET"])
    def sio_machine_list(self, request):
        names = sorted(m.name for m in self.hub.machines.values() if m.connected)
        return self._json(request, {"machine_list": ["/" + n for n in names]})

    @app.route("/machines", methods=["GET"])
    def machines(self, request):
        now = self.clock.seconds()
        out = []
        for m in sorted(self.hub.machines.values(), key=lambda m: m.name):
            st = m.status()
            st["sensors"] = [{"name": n, "type": t} for n, t in st["sensors"].items()]
            if self.catalog is not None:
                for s in st["sensors"]:
                    s["meta"] = self._sensor_meta(m.name, s["name"])
            st["frames_per_second"] = self._rate(m, now)
            out.append(st)
        if self.cluster is not None:  # issue 16: the machines other nodes feed too
            d = self.cluster.with_cluster(out)
            return d.addCallback(lambda machines: self._json(request, {"machines": machines, "time": float(now)}))
        return self._json(request, {"machines": out, "time": float(now)})

    def _sensor_meta(self, machine, sensor):
        """Issue 17: rate, unit, rpm … and where each came from (None: not seen yet)."""
        meta = self.catalog.meta(machine, sensor)
        return None if meta is None else meta.as_dict()

    def _rate(self, machine, now):
        """Frames per second since the previous look (at least 1 s apart)."""
        prev = self._rates.get(machine.name)
        if prev is None:
            since = machine.connected_since
            rate = machine.frames / (now - since) if since is not None and now - since >= 1 else 0.0
            self._rates[machine.name] = (now, machine.frames, float(rate))
            return float(rate)
        t, frames, rate = prev
        if now - t >= 1:
            rate = max(machine.frames - frames, 0) / (now - t)
            self._rates[machine.name] = (now, machine.frames, float(rate))
        return float(rate) if machine.connected else 0.0
