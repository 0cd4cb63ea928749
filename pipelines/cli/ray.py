"""`vidpeft ray up|down|status`: keep one warm local Ray for many runs (pipelines/runtime/warm_ray.py)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("ray", help="keep a warm local Ray (loopback only, token auth) that every vidpeft "
                                   "command on this machine attaches to: up | down | status")
    p.add_argument("action", choices=("up", "down", "status", "serve"),
                   help="up: start it in the background; down: stop it; status: is one up (serve: the "
                        "background process itself)")
    p.add_argument("--cpus", type=int, default=0, help="CPUs it offers (0 = every core)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pipelines.runtime import warm_ray

    if args.action == "serve":
        from pipelines.runtime.ray_env import ensure_ray

        return warm_ray.serve(args.cpus, start=ensure_ray)
    if args.action == "up":
        s = warm_ray.up(args.cpus)
        print(f"warm Ray {'already up' if s.get('already') else 'up'} at {s['address']} (pid {s['pid']}, "
              f"{s['cpus']} CPUs); vidpeft commands on this machine attach to it; `vidpeft ray down` stops it")
        return 0
    if args.action == "down":
        s = warm_ray.down()
        print(f"warm Ray at {s['address']} stopped" if s else "no warm Ray was up")
        return 0
    s = warm_ray.find()
    print(f"warm Ray up at {s['address']} (pid {s['pid']}, {s['cpus']} CPUs)" if s else "no warm Ray is up")
    return 0 if s else 1
